import type { Execution } from './execution.js';
import type { ApiRecord, KnownTunnel, Model, Op } from './model.js';
import { describeRow, rowIdOfTunnelName, type Snapshot, takeSnapshot, tunnelIdOfTarget } from './snapshot.js';
import { BROKER_COUNT, MAX_TUNNELS_PER_USER, TTL_SECONDS } from './world.js';

/**
 * The invariants checked once a sequence has settled. Each returns what it found broken,
 * as readable lines; an empty list means it holds. The numbers are those of issue 10.
 */
export interface Violation {
  /** '1'..'7' as in issue 10 ('4r': 4 broken by the reconciler), 'Q' for quiescence. */
  id: string;
  invariant: string;
  lines: string[];
}

const short = (id: string | null | undefined) => (id ? id.slice(0, 8) : '-');
/** Redis's clock (expiresAt) against PostgreSQL's (event times): one machine, so a little slack is plenty. */
const CLOCK_SLACK_MS = 250;

// ---- 1. upstream holds exactly what live rows reference ----------------------------------

export function upstreamMatchesRows(s: Snapshot): string[] {
  const lines: string[] = [];
  const live = s.rows.filter((r) => r.status !== 'ended');
  const liveTunnels = s.tunnels.filter((t) => t.deleted_at === null);
  const tunnelById = new Map(s.tunnels.map((t) => [t.id, t]));
  const wantTunnels = new Map(live.filter((r) => r.cfTunnelId).map((r) => [r.cfTunnelId!, r]));
  const wantRecords = new Map(live.filter((r) => r.dnsRecordId).map((r) => [r.dnsRecordId!, r]));
  for (const t of liveTunnels) {
    if (wantTunnels.has(t.id)) continue;
    lines.push(`+ upstream tunnel ${short(t.id)} ${t.name}: no live row references it; its ${describeRow(s.rowById.get(rowIdOfTunnelName(t.name) ?? ''))}`);
  }
  for (const [id, row] of wantTunnels) {
    if (!liveTunnels.some((t) => t.id === id)) lines.push(`- upstream tunnel ${short(id)} of live ${describeRow(row)} is missing${tunnelById.get(id)?.deleted_at ? ' (deleted upstream)' : ''}`);
  }
  for (const rec of s.dnsRecords) {
    if (wantRecords.has(rec.id)) continue;
    const target = tunnelIdOfTarget(rec.content);
    const targetTunnel = target ? tunnelById.get(target) : undefined;
    const targetState = !targetTunnel ? 'unknown upstream' : targetTunnel.deleted_at ? `deleted upstream at ${targetTunnel.deleted_at}` : 'live upstream';
    const owner = targetTunnel ? s.rowById.get(rowIdOfTunnelName(targetTunnel.name) ?? '') : undefined;
    lines.push(`+ upstream DNS record ${short(rec.id)} ${rec.name} -> ${short(target)} (${targetState}, its ${describeRow(owner)}; row's cf_tunnel_id ${short(owner?.cfTunnelId)}, dns_record_id ${short(owner?.dnsRecordId)}): no live row references it`);
  }
  for (const [id, row] of wantRecords) {
    if (!s.dnsRecords.some((r) => r.id === id)) lines.push(`- upstream DNS record ${short(id)} of live ${describeRow(row)} is missing`);
  }
  // Access (issue 12): a tunnel's own application and policy (named after its row), exactly the live rows'.
  for (const [kind, objects, wanted] of [
    ['Access application', s.accessApps, new Map(live.filter((r) => r.accessAppId).map((r) => [r.accessAppId!, r]))],
    ['Access policy', s.accessPolicies, new Map(live.filter((r) => r.accessPolicyId).map((r) => [r.accessPolicyId!, r]))],
  ] as const) {
    for (const o of objects) {
      if (rowIdOfTunnelName(o.name) === undefined || wanted.has(o.id)) continue;
      lines.push(`+ upstream ${kind} ${short(o.id)} ${o.name}: no live row references it; its ${describeRow(s.rowById.get(rowIdOfTunnelName(o.name) ?? ''))}`);
    }
    for (const [id, row] of wanted) {
      if (!objects.some((o) => o.id === id)) lines.push(`- upstream ${kind} ${short(id)} of live ${describeRow(row)} is missing`);
    }
  }
  return lines;
}

// ---- 4. each upstream object deleted successfully at most once, and not deleted again for nothing

const DELETE_PATH = /\/(?:cfd_tunnel|dns_records)\/([^/?]+)(?:\?.*)?$/;

/**
 * Each object has at most one successful delete (the emulator's deletion record). And a
 * delete of an object already deleted (a 404) is redundant unless something excuses it:
 * the successful delete's answer did not reach the broker (lost, slow), a request about
 * the same tunnel failed before it (a teardown failed and is being retried), or a broker
 * was killed or Redis flushed during the tunnel's life (a lease or an end restarted).
 */
export function deletedAtMostOnce(s: Snapshot, model: Model): { lines: string[]; byReconciler: string[] } {
  const lines: string[] = [];
  const byReconciler: string[] = [];
  const first = new Map<string, (typeof s.deletions)[number]>();
  const successes = new Map<string, number>();
  for (const d of s.deletions) {
    successes.set(d.id, (successes.get(d.id) ?? 0) + 1);
    if (!first.has(d.id)) first.set(d.id, d);
  }
  for (const [id, n] of successes) if (n > 1) lines.push(`${first.get(id)!.resource} ${short(id)} ${first.get(id)!.name} was deleted successfully ${n} times`);

  const tunnelById = new Map(s.tunnels.map((t) => [t.id, t]));
  /** Upstream tunnel id -> what the requests about it may mention (ids, its name, its hostname). */
  const mentions = new Map<string, string[]>();
  const mentionsOf = (cfTunnelId: string): string[] => {
    let m = mentions.get(cfTunnelId);
    if (m) return m;
    const t = tunnelById.get(cfTunnelId);
    const row = t ? s.rowById.get(rowIdOfTunnelName(t.name) ?? '') : undefined;
    const records = s.deletions.filter((d) => d.resource === 'dns_record' && tunnelIdOfTarget(d.content) === cfTunnelId).map((d) => d.id);
    const live = s.dnsRecords.filter((r) => tunnelIdOfTarget(r.content) === cfTunnelId).map((r) => r.id);
    m = [cfTunnelId, ...records, ...live, ...(t ? [t.name] : []), ...(row ? [row.hostname] : [])];
    mentions.set(cfTunnelId, m);
    return m;
  };
  const isFailure = (i: number) => {
    const r = s.requests[i]!;
    return r.fault !== undefined || r.status === 0 || r.status === 429 || r.status >= 500;
  };
  const disruptions = model.events.filter((e) => e.kind === 'kill' || e.kind === 'flush');

  const redundant = new Map<string, string[]>();
  s.requests.forEach((r, i) => {
    if ((r.endpoint !== 'tunnel.delete' && r.endpoint !== 'dns.delete') || r.status !== 404) return;
    const id = DELETE_PATH.exec(r.path)?.[1];
    const d = id ? first.get(id) : undefined;
    if (!id || !d || d.requestIndex > i) return;
    const cfTunnelId = d.resource === 'tunnel' ? d.id : tunnelIdOfTarget(d.content);
    if (!cfTunnelId) return;
    const words = mentionsOf(cfTunnelId);
    const related = (j: number) => words.some((w) => s.requests[j]!.path.includes(w));
    let start = i;
    for (let j = 0; j < i; j++) if (related(j)) { start = j; break; }
    const winner = s.requests[d.requestIndex]!;
    if (winner.status !== 200 || winner.fault !== undefined) return;
    for (let j = start; j < i; j++) if (related(j) && isFailure(j)) return;
    if (disruptions.some((e) => e.requestIndex >= start && e.requestIndex <= i)) return;
    const list = redundant.get(cfTunnelId) ?? [];
    list.push(`${d.resource} ${short(id)} deleted by request #${d.requestIndex} (200), deleted again by #${i} (404)`);
    redundant.set(cfTunnelId, list);
  });
  for (const [cfTunnelId, found] of redundant) {
    const t = tunnelById.get(cfTunnelId);
    const row = t ? s.rowById.get(rowIdOfTunnelName(t.name) ?? '') : undefined;
    const clientDeletes = row ? model.records.filter((r) => r.op === 'delete' && r.tunnelId === row.id).length : 0;
    const calls = s.requests.filter((q) => mentionsOf(cfTunnelId).some((w) => q.path.includes(w)));
    const byEndpoint = new Map<string, number>();
    for (const q of calls) byEndpoint.set(q.endpoint, (byEndpoint.get(q.endpoint) ?? 0) + 1);
    const rowEvents = row ? (s.events.get(row.id) ?? []) : [];
    const events = rowEvents.map((e) => `${e.type}(${e.actor})`).join(' ');
    // The reconciler removing, from a listing made before the row ended, what its ender had just deleted.
    const out = rowEvents.some((e) => e.type === 'orphan_removed') ? byReconciler : lines;
    out.push(
      `tunnel ${short(cfTunnelId)} (${describeRow(row)}, ${clientDeletes} client DELETE(s)): ${found.length} redundant delete(s) with no failure, kill or flush to excuse them; `
        + `upstream calls about it: ${[...byEndpoint].map(([e, n]) => `${e} x${n}`).join(', ')}; its events: ${events || 'none'}`,
      ...found.slice(0, 6).map((f) => `    ${f}`),
      ...(found.length > 6 ? [`    ... and ${found.length - 6} more`] : []),
    );
  }
  return { lines, byReconciler };
}

// ---- 5. no 500, and nothing outside each route's documented answers -------------------

const ALLOWED: Record<Op, readonly number[]> = {
  create: [201, 409, 422, 429, 502, 503],
  'probe.create': [201, 409, 422, 429, 502, 503],
  delete: [204, 502, 503],
  'probe.delete': [204, 502, 503],
  'cleanup.delete': [204, 502, 503],
  heartbeat: [200, 404, 503],
  list: [200, 503],
  'probe.list': [200, 503],
};

export function expectedStatuses(records: readonly ApiRecord[]): string[] {
  const bad = records.filter((r) => r.status !== 0 && !ALLOWED[r.op].includes(r.status));
  const groups = new Map<string, ApiRecord[]>();
  for (const r of bad) {
    const key = `${r.status === 500 ? '500 (never allowed)' : `${r.status} unexpected`} on ${r.op} ${r.method}${r.code ? ` ${r.code}` : ''}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  return [...groups].map(([key, rs]) => `${key}: ${rs.length}x, e.g. request ${rs[0]!.seq} ${rs[0]!.method} ${rs[0]!.path} via b${rs[0]!.broker}`);
}

/** How many answers of each status each op got: the report's summary. */
export function statusSummary(records: readonly ApiRecord[]): string {
  const counts = new Map<string, number>();
  for (const r of records) {
    const key = `${r.op} ${r.status === 0 ? (r.error ?? 'no answer') : r.status}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].sort().map(([k, n]) => `${k}: ${n}`).join(', ');
}

// ---- 6. a tunnel heartbeated to the end is never reaped ------------------------------------

/**
 * For each tunnel the model was heartbeating when the sequence ended: its row must be active
 * and never have lapsed. If it was reaped, the heartbeats decide whose fault it is: an
 * acknowledged heartbeat still valid when it was reaped, or heartbeats the brokers refused,
 * put it on the brokers; heartbeats that never got an answer in time (the test process or
 * the machine stalled) make it a warning.
 */
export function heartbeatedNeverReaped(s: Snapshot, model: Model): { lines: string[]; warnings: string[] } {
  const lines: string[] = [];
  const warnings: string[] = [];
  for (const t of model.tunnels.filter((k) => k.heartbeat !== 'off' && k.deletedAt === undefined)) {
    const row = s.rowById.get(t.id);
    const lapsed = s.events.get(t.id)?.find((e) => e.type === 'heartbeat_lapsed');
    if (row?.status === 'active' && !lapsed && t.heartbeat === 'on') continue;
    const endedAt = lapsed?.createdAt.getTime() ?? row?.endedAt?.getTime() ?? t.lostAt ?? s.takenAt;
    const what = `tunnel ${short(t.id)} ${t.slug} (heartbeated since +${model.elapsed(t.heartbeatOnSince ?? t.learnedAt)})`;
    if (!row) {
      lines.push(`${what}: no row at all`);
      continue;
    }
    if (!lapsed && row.endReason !== 'heartbeat_lapsed') {
      lines.push(`${what}: ${describeRow(row)} although nobody deleted it${t.lostAt ? `; a heartbeat got 404 at +${model.elapsed(t.lostAt)}` : ''}`);
      continue;
    }
    // Heartbeats that began after it lapsed (a Heartbeat command on a tunnel already reaped) prove nothing.
    if ((t.heartbeatOnSince ?? 0) > endedAt) continue;
    const acks = [
      ...(t.firstExpiresAt ? [{ at: t.learnedAt, expiresAt: t.firstExpiresAt, how: 'the create answer' }] : []),
      ...t.attempts.filter((a) => a.expiresAt !== undefined).map((a) => ({ at: a.doneAt, expiresAt: a.expiresAt!, how: `a heartbeat via b${a.broker}` })),
    ].filter((a) => a.at <= endedAt + CLOCK_SLACK_MS);
    const valid = acks.find((a) => a.expiresAt > endedAt + CLOCK_SLACK_MS);
    if (valid) {
      lines.push(`${what}: reaped at +${model.elapsed(endedAt)} although ${valid.how} at +${model.elapsed(valid.at)} said it was alive until +${model.elapsed(valid.expiresAt)}`);
      continue;
    }
    const coveredUntil = Math.max(0, ...acks.map((a) => a.expiresAt));
    const refused = t.attempts.filter((a) => a.sentAt >= coveredUntil - TTL_SECONDS * 1000 && a.sentAt <= endedAt && a.status !== 200 && a.status !== 0);
    const unanswered = t.attempts.filter((a) => a.sentAt >= coveredUntil - TTL_SECONDS * 1000 && a.sentAt <= endedAt && a.status === 0);
    if (refused.length > 0) {
      lines.push(`${what}: reaped at +${model.elapsed(endedAt)} after its heartbeats were refused: ${refused.map((a) => `${a.status} via b${a.broker} at +${model.elapsed(a.sentAt)}`).join(', ')}`);
    } else {
      warnings.push(`${what}: reaped at +${model.elapsed(endedAt)}, but its last acknowledged heartbeat expired at +${model.elapsed(coveredUntil)} and the agent's next ones got no answer in time (${unanswered.map((a) => `${a.error ?? 'none'} via b${a.broker} at +${model.elapsed(a.sentAt)}`).join(', ') || 'none sent'}): the test process or the machine stalled, not counted against the brokers`);
    }
  }
  return { lines, warnings };
}

// ---- 7. an Idempotency-Key replays its first 201 ---------------------------------------

/**
 * Once a create with a key has answered 201, a later create with the same key and body gets
 * that same tunnel back, and one with another body 422, unless Redis was flushed in between
 * (which forgets stored responses) or Redis answered 503.
 */
export function idempotentReplays(model: Model): string[] {
  const lines: string[] = [];
  const flushes = model.events.filter((e) => e.kind === 'flush').map((e) => e.at);
  for (const firstCall of model.idempotent.filter((c) => c.status === 201)) {
    for (const later of model.idempotent) {
      if (later === firstCall || later.userIndex !== firstCall.userIndex || later.key !== firstCall.key || later.sentAt <= firstCall.doneAt) continue;
      if (flushes.some((f) => f >= firstCall.sentAt && f <= later.doneAt) || later.status === 503 || later.status === 0) continue;
      const same = later.canonical === firstCall.canonical;
      const ok = same ? later.status === 201 && later.tunnelId === firstCall.tunnelId : later.status === 422;
      if (!ok) {
        lines.push(`u${later.userIndex} ${later.key}: first ${firstCall.canonical} -> 201 ${short(firstCall.tunnelId)}; later ${later.canonical} -> ${later.status}${later.code ? ` ${later.code}` : ''}${later.tunnelId ? ` ${short(later.tunnelId)}` : ''} (expected ${same ? `201 ${short(firstCall.tunnelId)}` : '422'})`);
      }
    }
  }
  return lines;
}

// ---- 2. every ended tunnel's slug can be taken again (probes) ----------------------------

export async function slugsReusable(x: Execution, s: Snapshot): Promise<string[]> {
  const lines: string[] = [];
  const held = new Set(s.rows.filter((r) => r.status !== 'ended').map((r) => r.slug));
  const slugs = [...new Set(s.rows.filter((r) => r.status === 'ended' && r.createdAt.getTime() >= x.model.startedAt - 1000).map((r) => r.slug))].filter((slug) => !held.has(slug));
  const userId = x.probeUserId;
  for (const [i, slug] of slugs.slice(0, 40).entries()) {
    const res = await x.api('probe.create', i % BROKER_COUNT, 'POST', '/v1/tunnels', { userId, body: { port: 4000, requestedSlug: slug } });
    if (res.status !== 201) {
      const hostname = `${slug}.${x.world.domain}`;
      const records = x.world.emulator.dnsRecords().filter((r) => r.name === hostname);
      const tunnels = new Map(x.world.emulator.allTunnels().map((t) => [t.id, t]));
      lines.push(`slug ${slug} (its tunnel ended): create -> ${res.status}${res.code ? ` ${res.code}` : ''}${res.error ? ` (${res.error})` : ''}; upstream records for ${hostname}: ${records.map((r) => {
        const target = tunnels.get(tunnelIdOfTarget(r.content) ?? '');
        return `${short(r.id)} -> ${short(tunnelIdOfTarget(r.content))} (${!target ? 'unknown tunnel' : target.deleted_at ? 'deleted tunnel' : 'live tunnel'})`;
      }).join(', ') || 'none'}`);
      continue;
    }
    const del = await x.api('probe.delete', (i + 1) % BROKER_COUNT, 'DELETE', `/v1/tunnels/${res.body.tunnelId}`, { userId, tunnelId: res.body.tunnelId });
    if (del.status !== 204) lines.push(`slug ${slug}: the probe's DELETE -> ${del.status}${del.code ? ` ${del.code}` : ''}`);
  }
  return lines;
}

// ---- 3. the quota counts exactly the live tunnels (probes) -------------------------------

export async function quotaMatchesLiveCount(x: Execution, s: Snapshot): Promise<string[]> {
  const lines: string[] = [];
  for (const [u, userId] of x.model.userIds.entries()) {
    const rows = s.rows.filter((r) => r.ownerId === userId && r.status !== 'ended');
    const listed = await x.api('probe.list', u % BROKER_COUNT, 'GET', '/v1/tunnels', { userId });
    const listedCount = listed.status === 200 ? (listed.body.tunnels as unknown[]).length : -1;
    if (listedCount !== rows.length) lines.push(`u${u}: ${rows.length} row(s) not ended but GET /v1/tunnels -> ${listed.status} with ${listedCount}`);
    const room = MAX_TUNNELS_PER_USER - rows.length;
    const probes: string[] = [];
    const answers: string[] = [];
    for (let i = 0; i <= room && i <= MAX_TUNNELS_PER_USER; i++) {
      const res = await x.api('probe.create', (u + i) % BROKER_COUNT, 'POST', '/v1/tunnels', { userId, body: { port: 4000 } });
      answers.push(`${res.status}${res.code ? ` ${res.code}` : ''}`);
      if (res.status === 201) probes.push(res.body.tunnelId as string);
      if (res.status !== 201) break;
    }
    const last = answers.at(-1);
    // A probe tunnel does not heartbeat: on a loaded machine one can lapse (TTL_SECONDS) and be
    // reaped before the last probe, which then rightly fits. Only more live at once is a breach.
    const lapsed = probes.length > room
      ? await x.world.prisma.tunnel.count({ where: { id: { in: probes }, endReason: 'heartbeat_lapsed' } })
      : 0;
    const holds = lapsed > 0 ? probes.length - lapsed <= room : probes.length === room && last === '429 TUNNEL_LIMIT_EXCEEDED';
    if (!holds) {
      lines.push(`u${u}: ${rows.length} live (${rows.map((r) => describeRow(r)).join(', ') || 'none'}), so room for ${room}; creates answered ${answers.join(', ')}`);
    }
    for (const [i, id] of probes.entries()) {
      const del = await x.api('probe.delete', (u + i) % BROKER_COUNT, 'DELETE', `/v1/tunnels/${id}`, { userId, tunnelId: id });
      if (del.status !== 204) lines.push(`u${u}: the probe's DELETE of ${short(id)} -> ${del.status}${del.code ? ` ${del.code}` : ''}`);
    }
  }
  return lines;
}

// ---- quiescence -----------------------------------------------------------------------------

export interface Quiescence {
  reached: boolean;
  afterMs: number;
  /** Why not, when not reached. */
  pending: string[];
}

/**
 * Waits until nothing is creating or ending, every active tunnel is one the model still
 * heartbeats (the rest reaped), and upstream holds exactly what the live rows reference
 * (the reconciler has caught up), or until the deadline.
 */
export async function waitForQuiescence(x: Execution, timeoutMs: number): Promise<Quiescence> {
  const started = Date.now();
  let pending: string[] = [];
  for (let i = 0; i < 1000; i++) {
    const s = await takeSnapshot(x);
    pending = notQuiescent(s, x.model);
    if (pending.length === 0) {
      await reconcilerAtRest(x);
      return { reached: true, afterMs: Date.now() - started, pending };
    }
    if (Date.now() - started > timeoutMs) break;
    await new Promise((r) => setTimeout(r, 300));
  }
  return { reached: false, afterMs: Date.now() - started, pending };
}

/**
 * Lets a reconcile pass in flight finish (up to 3 s), so its audit events are written before
 * the invariants read them. A lock a killed broker left behind only expires with its lease:
 * then nothing is in flight, and waiting longer would change nothing.
 */
async function reconcilerAtRest(x: Execution): Promise<void> {
  const deadline = Date.now() + 3000;
  for (let i = 0; i < 100 && Date.now() < deadline; i++) {
    if (!(await x.world.reconcilePassRunning())) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

function notQuiescent(s: Snapshot, model: Model): string[] {
  const pending: string[] = [];
  const beating = new Set(model.beating().map((t) => t.id));
  for (const r of s.rows.filter((row) => row.status === 'creating' || row.status === 'ending')) {
    pending.push(`${describeRow(r)} since +${model.elapsed(r.updatedAt.getTime())}`);
  }
  for (const r of s.rows.filter((row) => row.status === 'active' && !beating.has(row.id))) {
    const known: KnownTunnel | undefined = model.get(r.id);
    pending.push(`${describeRow(r)} is not heartbeated${known?.silencedAt ? ` (silenced at +${model.elapsed(known.silencedAt)})` : ''} yet not reaped`);
  }
  const upstream = upstreamMatchesRows(s);
  if (upstream.length > 0) pending.push(`upstream differs from the live rows (${upstream.length} difference(s))`);
  return pending;
}
