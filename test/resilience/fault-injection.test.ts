import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ERROR_CATALOGUE } from '../../src/errors/catalogue.js';
import { eventually, startTestBroker, type TestBroker } from '../helpers/broker.js';

/**
 * Creates and deletes under ~30% injected upstream faults (5xx, 429 + Retry-After, hangs
 * past the timeout, and successes whose response is lost). Every request must end in
 * success or a documented error; once the faults stop, within a reconcile interval,
 * upstream must hold exactly the tunnels, DNS records and Access objects (with a team rule,
 * a third each of team, public and emails tunnels) the database calls live.
 */
const N = 30;
let broker: TestBroker;
beforeAll(async () => {
  broker = await startTestBroker({
    env: {
      CLOUDFLARE_TIMEOUT_MS: '1000', CLOUDFLARE_MAX_RETRIES: '2', REAPER_INTERVAL_SECONDS: '1',
      RECONCILE_INTERVAL_SECONDS: '2', RECONCILE_GRACE_SECONDS: '1', MAX_TUNNELS_PER_USER: '50', CREATE_RATE_LIMIT_PER_MINUTE: '1000',
      ACCESS_TEAM_EMAIL_DOMAINS: 'team.example',
    },
    startReaper: true,
  });
  // Faults are drawn from a seeded generator in the emulator: each run sees the same sequence.
  for (const [kind, probability] of [['error5xx', 0.1], ['rateLimit', 0.06], ['hang', 0.06], ['lostResponse', 0.1]] as const) {
    broker.emulator.injectFault({ kind, probability, status: 503, retryAfterSec: 1 });
  }
}, 60_000);
afterAll(async () => {
  await broker?.close();
});

const documented = new Set(Object.keys(ERROR_CATALOGUE));

function expectCleanOutcome(res: { statusCode: number; json(): any; headers: Record<string, unknown> }, ok: number) {
  if (res.statusCode === ok) return;
  expect([502, 503], `status ${res.statusCode}: ${JSON.stringify(res.json())}`).toContain(res.statusCode);
  const body = res.json();
  expect(documented.has(body.code), body.code).toBe(true);
  if (res.statusCode === 503) expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
}

it(`${N} creates and deletes under ~30% upstream faults end cleanly, and upstream converges on the database`, async () => {
  const users = Array.from({ length: 5 }, () => `user-${randomUUID()}`);
  const created: Array<{ id: string; userId: string }> = [];
  const outcomes = { created: 0, createFailed: 0, deleted: 0, deleteFailed: 0 };

  const audiences = [undefined, { mode: 'public' }, { mode: 'emails', emails: ['guest@partner.example'] }];
  for (let batch = 0; batch < N / 5; batch++) {
    const results = await Promise.all(users.map((userId, i) =>
      broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000, access: audiences[(batch + i) % 3] } })
        .then((res) => ({ res, userId }))));
    for (const { res, userId } of results) {
      expectCleanOutcome(res, 201);
      if (res.statusCode === 201) {
        created.push({ id: res.json().tunnelId, userId });
        outcomes.created++;
      } else outcomes.createFailed++;
    }
  }
  // Delete half of what was created, also under faults.
  const toDelete = created.filter((_, i) => i % 2 === 0);
  const deletions = await Promise.all(toDelete.map(({ id, userId }) =>
    broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${id}`, headers: broker.auth(userId) })));
  for (const res of deletions) {
    expectCleanOutcome(res, 204);
    if (res.statusCode === 204) outcomes.deleted++;
    else outcomes.deleteFailed++;
  }
  // With ~30% faults, some of each must have failed, or the faults were not really injected.
  expect(outcomes.created).toBeGreaterThan(0);
  expect(outcomes.createFailed + outcomes.deleteFailed).toBeGreaterThan(0);
  expect(broker.emulator.requests.some((r) => r.fault !== undefined)).toBe(true);

  broker.emulator.clearFaults();

  // Converged: nothing creating or ending; upstream == the live rows, exactly.
  const converged = async () => {
    const rows = await broker.app.prisma.tunnel.findMany({ where: { status: { not: 'ended' } } });
    if (rows.some((r) => r.status !== 'active')) return false;
    const liveIds = new Set(rows.map((r) => r.cfTunnelId));
    const liveDns = new Set(rows.map((r) => r.dnsRecordId));
    const upstreamTunnels = broker.emulator.liveTunnels();
    const upstreamDns = broker.emulator.dnsRecords();
    // Access: exactly the live rows' own applications and policies, plus the shared team gate and public policy.
    const own = (name: string) => name !== 'tb-team' && name !== 'tb-public';
    const liveApps = new Set(rows.flatMap((r) => (r.accessAppId ? [r.accessAppId] : [])));
    const livePolicies = new Set(rows.flatMap((r) => (r.accessPolicyId ? [r.accessPolicyId] : [])));
    const upstreamApps = broker.emulator.accessApps().filter((a) => own(a.name));
    const upstreamPolicies = broker.emulator.accessPolicies().filter((p) => own(p.name));
    return upstreamTunnels.length === liveIds.size && upstreamTunnels.every((t) => liveIds.has(t.id))
      && upstreamDns.length === liveDns.size && upstreamDns.every((r) => liveDns.has(r.id))
      && upstreamApps.length === liveApps.size && upstreamApps.every((a) => liveApps.has(a.id))
      && upstreamPolicies.length === livePolicies.size && upstreamPolicies.every((p) => livePolicies.has(p.id));
  };
  await eventually(converged, { timeoutMs: 30_000, intervalMs: 250, what: 'upstream to converge on the database' });

  // Every tunnel the API said was deleted is gone upstream, and every live one is whole.
  for (const { id } of toDelete) {
    const row = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id } });
    expect(row.status).toBe('ended');
  }
  for (const row of await broker.app.prisma.tunnel.findMany({ where: { status: 'active' } })) {
    expect(broker.emulator.configuration(row.cfTunnelId!)).toBeDefined();
    // Each live tunnel has exactly the audience its row says.
    const audience = broker.emulator.audience(row.hostname);
    if (row.accessMode === 'team') expect(audience).toMatchObject({ gate: 'login', appName: 'tb-team' });
    else if (row.accessMode === 'public') expect(audience).toMatchObject({ gate: 'public' });
    else expect(audience).toMatchObject({ gate: 'login', emails: row.accessEmails });
  }
  // And no hostname of a tunnel ever resolved without its gate, faults or not.
  for (const entry of broker.emulator.gateLog()) expect(entry.ungated).toEqual([]);
}, 120_000);
