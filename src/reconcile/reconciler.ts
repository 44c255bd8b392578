import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { ListedDnsRecord, ListedTunnel, TunnelProvider } from '../cloudflare/tunnel-provider.js';
import { isUpstreamError } from '../cloudflare/upstream-error.js';
import type { Prisma, PrismaClient, TunnelStatus } from '../generated/prisma/client.js';
import { PeriodicTimer } from '../lifecycle/periodic-timer.js';
import { LogEvent, type Logger } from '../logging/logger.js';

export const DEFAULT_RECONCILE_INTERVAL_MS = 300_000;
/** An upstream resource younger than this is never removed: a create may still be writing its row. */
export const DEFAULT_RECONCILE_GRACE_MS = 600_000;
/** Cloudflare's largest page for tunnel lists: an account's 1000 tunnels in one request. */
export const DEFAULT_RECONCILE_PER_PAGE = 1000;
/** Upstream deletions in flight at once. */
export const DEFAULT_RECONCILE_CONCURRENCY = 4;
/**
 * Deletions per pass; the rest wait for the next pass. A tunnel costs two requests and a
 * record one, so a backlog of orphans cannot spend the account's whole request budget at once.
 */
export const DEFAULT_RECONCILE_MAX_DELETIONS = 200;
/** How long the pass lock lives without renewal; it is renewed every third of this while a pass runs. */
export const DEFAULT_RECONCILE_LOCK_LEASE_MS = 120_000;

const LOCK_KEY = 'reconcile:lock';
/** Ids per `IN (...)` when loading rows: keeps each query's parameter list modest. */
const DB_CHUNK = 1000;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TUNNEL_TARGET_RE = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.cfargotunnel\.com$/;

// KEYS: lock. ARGV: token. Deletes the lock only if this holder still owns it.
const RELEASE_LOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

// KEYS: lock. ARGV: token, leaseMs. Extends the lease only if this holder still owns it.
const RENEW_LOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`;

interface ReconcileLockCommands {
  tbReconcileRelease(lock: string, token: string): Promise<number>;
  tbReconcileRenew(lock: string, token: string, leaseMs: number): Promise<number>;
}

export type ReconcileResource = 'tunnel' | 'dns_record';

/** Why something is (or, in a dry run, would be) removed. */
export type RemovalReason =
  /** No row in the database references it. */
  | 'no_row'
  /** Every row that references it has ended. */
  | 'row_ended';

/** Why something was left alone. */
export type SkipReason =
  /** A row that is not ended references it. */
  | 'live_row'
  /** A row referencing it appeared between the listing and the delete. */
  | 'live_row_on_recheck'
  /** Younger than the grace period. */
  | 'within_grace'
  /** Upstream gave no creation time, so its age cannot be judged. */
  | 'unknown_age'
  /** The name has the prefix but the rest is not a row id, so the broker did not make it. */
  | 'name_not_ours'
  /** A DNS record whose name is not under TUNNEL_DOMAIN. */
  | 'outside_domain'
  /** A DNS record that is not a CNAME. */
  | 'not_cname'
  /** A DNS record whose content is not `<uuid>.cfargotunnel.com`. */
  | 'not_a_tunnel_target'
  /** A DNS record pointing at a tunnel that is not the broker's. */
  | 'foreign_tunnel'
  /** A tunnel that a DNS record still points at: it goes after the record, in a later pass if need be. */
  | 'dns_record_remains'
  /** An orphan beyond this pass's deletion limit: the next pass takes it. */
  | 'pass_limit'
  /** An orphan not reached because the pass stopped early (see `interruptedBy`). */
  | 'interrupted';

export interface ReconcileEntry {
  resource: ReconcileResource;
  /** Cloudflare's id of the tunnel or DNS record. */
  id: string;
  /** The tunnel's name, or the record's hostname. */
  name: string;
  /** DNS records: the record's content (the CNAME target). */
  target?: string;
  /** As upstream reported it (tunnel created_at, record created_on). */
  createdAt: string | null;
  /** The database row it belongs to, when one is known. */
  rowId: string | null;
}

export interface RemovedEntry extends ReconcileEntry {
  reason: RemovalReason;
}

export interface SkippedEntry extends ReconcileEntry {
  reason: SkipReason;
}

export interface FailedEntry extends ReconcileEntry {
  reason: RemovalReason;
  error: string;
}

export interface ReconcileReport {
  dryRun: boolean;
  /**
   * `completed`: every orphan found was handled (see `failed`). `locked`: another instance
   * holds the reconcile lock, so nothing was listed. `interrupted`: the pass stopped
   * deleting early, for the reason in `interruptedBy`; the next pass continues.
   */
  status: 'completed' | 'locked' | 'interrupted';
  interruptedBy?: 'stopping' | 'lock_lost' | 'upstream_unavailable' | 'database_unavailable';
  startedAt: string;
  durationMs: number;
  graceSeconds: number;
  /** What the upstream lists returned (tunnels under the prefix; tunnel CNAMEs under the domain). */
  listed: { tunnels: number; dnsRecords: number };
  /** Removed upstream; in a dry run, what a real pass would remove now. */
  removed: RemovedEntry[];
  skipped: SkippedEntry[];
  /** Deletions Cloudflare refused or failed; retried by the next pass. */
  failed: FailedEntry[];
}

export interface ReconcilerOptions {
  prisma: PrismaClient;
  redis: Redis;
  provider: TunnelProvider;
  logger: Logger;
  /** TUNNEL_DOMAIN: only CNAMEs under it are considered. */
  tunnelDomain: string;
  /** TUNNEL_NAME_PREFIX: only tunnels named `<prefix><row id>` are the broker's. */
  tunnelNamePrefix: string;
  intervalMs?: number;
  graceMs?: number;
  /** Page size of the upstream lists (tests use small pages to exercise pagination). */
  perPage?: number;
  concurrency?: number;
  maxDeletionsPerPass?: number;
  lockLeaseMs?: number;
}

/** A row, reduced to what tells whether it references an upstream resource. */
interface RowRef {
  id: string;
  status: TunnelStatus;
  cfTunnelId: string | null;
  dnsRecordId: string | null;
  hostname: string;
}

interface Candidate {
  entry: ReconcileEntry;
  reason: RemovalReason;
  /** Re-reads the database just before the delete: true when a live row now references it. */
  recheck: () => Promise<boolean>;
  remove: () => Promise<void>;
}

interface Plan {
  records: Candidate[];
  tunnels: Candidate[];
  /** Upstream tunnel id -> ids of the listed tunnel CNAMEs pointing at it. */
  recordsByTarget: Map<string, Set<string>>;
}

interface PassLock {
  /** Set once the lease could not be renewed: another instance may hold the lock now. */
  readonly lost: boolean;
  release(): Promise<void>;
}

type Interruption = NonNullable<ReconcileReport['interruptedBy']>;

/**
 * Removes what the broker left behind upstream: tunnels under its name prefix and tunnel
 * CNAMEs under its domain that no live row references, once they are older than the grace
 * period. Crashes, lost responses and failed rollbacks all end up here eventually.
 *
 * Contracts:
 * - `start()` and `stop()` are idempotent; `stop()` waits for the running pass.
 * - Passes never overlap within a process; across processes, a Redis lock (SET NX PX with
 *   a token, renewed while the pass runs, released by compare-and-delete) lets one run at
 *   a time. A dry run deletes nothing and takes no lock.
 * - It touches only what it owns: a tunnel whose name is the prefix followed by a row id
 *   (a UUID), and a CNAME under TUNNEL_DOMAIN pointing at such a tunnel or at a tunnel id
 *   the database recorded. Anything else is at most reported.
 * - Upstream is listed before the database is read, and a create inserts its row before it
 *   creates anything upstream, so whatever a create made is seen with its row. Each delete
 *   re-reads the database for that one resource first, and the grace period covers the rest.
 * - Lists are read to the last page. DNS records are removed before tunnels, so a record
 *   never outlives the tunnel that proves it is ours.
 */
export class Reconciler {
  readonly #prisma: PrismaClient;
  readonly #redis: Redis & ReconcileLockCommands;
  readonly #provider: TunnelProvider;
  readonly #log: Logger;
  readonly #domain: string;
  readonly #prefix: string;
  readonly #intervalMs: number;
  readonly #graceMs: number;
  readonly #perPage: number;
  readonly #concurrency: number;
  readonly #maxDeletions: number;
  readonly #lockLeaseMs: number;
  readonly #timer: PeriodicTimer;
  #running: { dryRun: boolean; promise: Promise<ReconcileReport> } | undefined;
  #stopping = false;

  constructor(options: ReconcilerOptions) {
    this.#prisma = options.prisma;
    this.#provider = options.provider;
    this.#log = options.logger;
    this.#domain = options.tunnelDomain.toLowerCase();
    this.#prefix = options.tunnelNamePrefix;
    this.#intervalMs = options.intervalMs ?? DEFAULT_RECONCILE_INTERVAL_MS;
    this.#graceMs = options.graceMs ?? DEFAULT_RECONCILE_GRACE_MS;
    this.#perPage = options.perPage ?? DEFAULT_RECONCILE_PER_PAGE;
    this.#concurrency = options.concurrency ?? DEFAULT_RECONCILE_CONCURRENCY;
    this.#maxDeletions = options.maxDeletionsPerPass ?? DEFAULT_RECONCILE_MAX_DELETIONS;
    this.#lockLeaseMs = options.lockLeaseMs ?? DEFAULT_RECONCILE_LOCK_LEASE_MS;
    const commands = options.redis as Redis & Partial<ReconcileLockCommands>;
    if (!commands.tbReconcileRelease) {
      options.redis.defineCommand('tbReconcileRelease', { numberOfKeys: 1, lua: RELEASE_LOCK });
      options.redis.defineCommand('tbReconcileRenew', { numberOfKeys: 1, lua: RENEW_LOCK });
    }
    this.#redis = options.redis as Redis & ReconcileLockCommands;
    this.#timer = new PeriodicTimer({
      intervalMs: this.#intervalMs,
      tick: () => this.reconcile(),
      onError: (error) => this.#log.error({ err: error, event: LogEvent.reconcileFailed }, 'reconcile pass failed'),
    });
  }

  get started(): boolean {
    return this.#timer.started;
  }

  start(): void {
    if (!this.#timer.start()) return;
    this.#stopping = false;
    this.#log.info({ intervalMs: this.#intervalMs, graceMs: this.#graceMs }, 'reconciler started');
  }

  async stop(): Promise<void> {
    if (!this.#timer.stop()) return;
    this.#stopping = true;
    await this.#running?.promise.catch(() => {});
    // Only the passes running at stop() are cut short; a later manual pass runs in full.
    this.#stopping = false;
    this.#log.info('reconciler stopped');
  }

  /**
   * One pass now. A pass of the same kind already running is shared rather than doubled;
   * a pass of the other kind runs after it. Rejects if listing upstream or reading the
   * database fails; failed deletions are in the report instead.
   */
  reconcile(options: { dryRun?: boolean } = {}): Promise<ReconcileReport> {
    const dryRun = options.dryRun ?? false;
    const running = this.#running;
    if (running?.dryRun === dryRun) return running.promise;
    const previous = running?.promise.catch(() => {});
    const promise: Promise<ReconcileReport> = (async () => {
      await previous;
      return this.#pass(dryRun);
    })().finally(() => {
      if (this.#running?.promise === promise) this.#running = undefined;
    });
    this.#running = { dryRun, promise };
    return promise;
  }

  async #pass(dryRun: boolean): Promise<ReconcileReport> {
    const started = performance.now();
    const report: ReconcileReport = {
      dryRun,
      status: 'completed',
      startedAt: new Date().toISOString(),
      durationMs: 0,
      graceSeconds: this.#graceMs / 1000,
      listed: { tunnels: 0, dnsRecords: 0 },
      removed: [],
      skipped: [],
      failed: [],
    };
    const lock = dryRun ? undefined : await this.#acquireLock();
    if (!dryRun && !lock) {
      report.status = 'locked';
      report.durationMs = Math.round(performance.now() - started);
      this.#log.debug({ event: LogEvent.reconcilePass, status: report.status }, 'another instance is reconciling');
      return report;
    }
    try {
      const plan = await this.#plan(report);
      let budget = this.#maxDeletions;
      const take = (candidates: Candidate[]) => {
        const taken = candidates.slice(0, Math.max(0, budget));
        for (const c of candidates.slice(taken.length)) report.skipped.push({ ...c.entry, reason: 'pass_limit' });
        budget -= taken.length;
        return taken;
      };
      // Records first: once its tunnel is gone, a record's ownership can no longer be proven upstream.
      await this.#process(take(plan.records), report, lock);
      const removedIds = new Set(report.removed.map((r) => r.id));
      const tunnels = plan.tunnels.filter((c) => {
        const remaining = [...(plan.recordsByTarget.get(c.entry.id.toLowerCase()) ?? [])].filter((id) => !removedIds.has(id));
        if (remaining.length > 0) report.skipped.push({ ...c.entry, reason: 'dns_record_remains' });
        return remaining.length === 0;
      });
      await this.#process(take(tunnels), report, lock);
      if (report.interruptedBy) report.status = 'interrupted';
    } finally {
      await lock?.release();
    }
    report.durationMs = Math.round(performance.now() - started);
    const summary = {
      event: LogEvent.reconcilePass,
      dryRun,
      status: report.status,
      interruptedBy: report.interruptedBy,
      listed: report.listed,
      removed: report.removed.length,
      skipped: report.skipped.length,
      failed: report.failed.length,
      durationMs: report.durationMs,
    };
    if (report.removed.length > 0 || report.failed.length > 0 || report.status !== 'completed') this.#log.info(summary, 'reconcile pass');
    else this.#log.debug(summary, 'reconcile pass');
    return report;
  }

  /** Lists upstream, then reads the rows, and sorts everything into skipped entries and candidates. */
  async #plan(report: ReconcileReport): Promise<Plan> {
    // Upstream first, the database second: see the class contract.
    const [tunnels, records] = await Promise.all([
      this.#provider.listings.listTunnelsUnderPrefix({ perPage: this.#perPage }),
      this.#provider.listings.listTunnelDnsRecords(this.#domain, { perPage: this.#perPage }),
    ]);
    report.listed = { tunnels: tunnels.length, dnsRecords: records.length };

    const ownedTunnels: Array<{ tunnel: ListedTunnel; rowId: string }> = [];
    /** Upstream tunnel id -> the row id its name carries, for tunnels named like ours. */
    const rowIdByCfId = new Map<string, string>();
    for (const tunnel of tunnels) {
      const rowId = this.#rowIdFromName(tunnel.name);
      if (rowId === null) {
        report.skipped.push({ ...tunnelEntry(tunnel, null), reason: 'name_not_ours' });
        continue;
      }
      ownedTunnels.push({ tunnel, rowId });
      rowIdByCfId.set(tunnel.id.toLowerCase(), rowId);
    }

    const tunnelRecords: Array<{ record: ListedDnsRecord; name: string; target: string }> = [];
    for (const record of records) {
      const name = record.name.toLowerCase().replace(/\.$/, '');
      const target = TUNNEL_TARGET_RE.exec(record.content.toLowerCase().replace(/\.$/, ''))?.[1];
      let reason: SkipReason | undefined;
      // The list's filters are upstream's; ownership is decided here, never by a filter.
      if (record.type !== 'CNAME') reason = 'not_cname';
      else if (!name.endsWith(`.${this.#domain}`)) reason = 'outside_domain';
      else if (target === undefined) reason = 'not_a_tunnel_target';
      if (reason === undefined && target !== undefined) tunnelRecords.push({ record, name, target });
      else report.skipped.push({ ...recordEntry(record, null), reason: reason ?? 'not_a_tunnel_target' });
    }

    const rows = await this.#loadRows({
      ids: ownedTunnels.map((t) => t.rowId),
      cfTunnelIds: [...new Set([...ownedTunnels.map((t) => t.tunnel.id.toLowerCase()), ...tunnelRecords.map((r) => r.target)])],
      dnsRecordIds: tunnelRecords.map((r) => r.record.id),
      liveHostnames: [...new Set(tunnelRecords.map((r) => r.name))],
    });
    const knownCfTunnelIds = new Set(rows.flatMap((r) => (r.cfTunnelId ? [r.cfTunnelId.toLowerCase()] : [])));

    const now = Date.now();
    const plan: Plan = { records: [], tunnels: [], recordsByTarget: new Map() };
    for (const { record, name, target } of tunnelRecords) {
      const targetRowId = rowIdByCfId.get(target) ?? null;
      const refs = (all: RowRef[]) => all.filter((r) => referencesRecord(r, record.id, name, target, targetRowId));
      const referencing = refs(rows);
      const entry = recordEntry(record, referencing[0]?.id ?? null);
      if (!rowIdByCfId.has(target) && !knownCfTunnelIds.has(target)) {
        report.skipped.push({ ...entry, reason: 'foreign_tunnel' });
        continue;
      }
      let pointing = plan.recordsByTarget.get(target);
      if (!pointing) plan.recordsByTarget.set(target, (pointing = new Set()));
      pointing.add(record.id);
      const skip = this.#skipReason(referencing, record.createdOn, now);
      if (skip) {
        report.skipped.push({ ...entry, reason: skip });
        continue;
      }
      plan.records.push({
        entry,
        reason: referencing.length > 0 ? 'row_ended' : 'no_row',
        recheck: async () => refs(await this.#rowsForRecord(record.id, name, target, targetRowId)).some(isLive),
        remove: () => this.#provider.removal.deleteDnsRecord(record.id, this.#provider.housekeepingBudget()),
      });
    }
    for (const { tunnel, rowId } of ownedTunnels) {
      const cfId = tunnel.id.toLowerCase();
      const refs = (all: RowRef[]) => all.filter((r) => r.id === rowId || r.cfTunnelId?.toLowerCase() === cfId);
      const referencing = refs(rows);
      const entry = tunnelEntry(tunnel, rowId);
      const skip = this.#skipReason(referencing, tunnel.createdAt, now);
      if (skip) {
        report.skipped.push({ ...entry, reason: skip });
        continue;
      }
      plan.tunnels.push({
        entry,
        reason: referencing.length > 0 ? 'row_ended' : 'no_row',
        recheck: async () => refs(await this.#rowsForTunnel(rowId, cfId)).some(isLive),
        remove: () => this.#provider.removal.removeTunnel(tunnel.id, this.#provider.housekeepingBudget()),
      });
    }
    return plan;
  }

  /** Deletes the candidates, each after a fresh look at the database; in a dry run, only reports them. */
  async #process(candidates: Candidate[], report: ReconcileReport, lock: PassLock | undefined): Promise<void> {
    if (!lock) {
      for (const c of candidates) report.removed.push({ ...c.entry, reason: c.reason });
      return;
    }
    const interruption = (): Interruption | undefined => {
      if (this.#stopping) return 'stopping';
      if (lock.lost) return 'lock_lost';
      return report.interruptedBy;
    };
    await mapWithConcurrency(candidates, this.#concurrency, async (c) => {
      const stoppedBy = interruption();
      if (stoppedBy) {
        report.interruptedBy ??= stoppedBy;
        report.skipped.push({ ...c.entry, reason: 'interrupted' });
        return;
      }
      let live: boolean;
      try {
        live = await c.recheck();
      } catch (error) {
        // Without the re-check nothing may be deleted; the next pass tries again.
        report.failed.push({ ...c.entry, reason: c.reason, error: error instanceof Error ? error.message : String(error) });
        this.#log.warn({ event: LogEvent.reconcileDeleteFailed, err: error, ...c.entry, reason: c.reason }, 'could not re-check the database; not removing');
        report.interruptedBy ??= 'database_unavailable';
        return;
      }
      if (live) {
        report.skipped.push({ ...c.entry, reason: 'live_row_on_recheck' });
        return;
      }
      try {
        await c.remove();
      } catch (error) {
        report.failed.push({ ...c.entry, reason: c.reason, error: error instanceof Error ? error.message : String(error) });
        this.#log.warn({ event: LogEvent.reconcileDeleteFailed, err: error, ...c.entry, reason: c.reason }, 'removing an upstream orphan failed');
        // Cloudflare is down or the budget is spent: the rest would only fail the same way.
        if (isUpstreamError(error) && error.transient) report.interruptedBy ??= 'upstream_unavailable';
        return;
      }
      report.removed.push({ ...c.entry, reason: c.reason });
      this.#log.info({ event: LogEvent.reconcileDeleted, ...c.entry, tunnelId: c.entry.rowId ?? undefined, reason: c.reason }, 'upstream orphan removed');
      await this.#audit(c);
    });
  }

  /**
   * Leftovers of an ended row go into that tunnel's audit trail; with no row there is no
   * trail to add to (the log line has it). Best effort: the removal itself has happened.
   */
  async #audit(c: Candidate): Promise<void> {
    if (c.reason !== 'row_ended' || c.entry.rowId === null) return;
    const { resource, id, name } = c.entry;
    try {
      await this.#prisma.tunnelEvent.create({
        data: { tunnelId: c.entry.rowId, type: 'orphan_removed', actor: 'reconciler', details: { resource, id, name, reason: c.reason } },
      });
    } catch (error) {
      this.#log.warn({ err: error, tunnelId: c.entry.rowId }, 'could not record the removal in the audit trail');
    }
  }

  #skipReason(referencing: RowRef[], createdAt: string | null, now: number): SkipReason | undefined {
    if (referencing.some(isLive)) return 'live_row';
    const created = createdAt === null ? Number.NaN : Date.parse(createdAt);
    if (Number.isNaN(created)) return 'unknown_age';
    // A creation time in the future (clock skew) reads as young, which is the safe side.
    if (now - created < this.#graceMs) return 'within_grace';
    return undefined;
  }

  /** The row id in a name `<prefix><uuid>`, or null: only names the broker itself would make are its own. */
  #rowIdFromName(name: string): string | null {
    if (!name.startsWith(this.#prefix)) return null;
    const rest = name.slice(this.#prefix.length);
    // tunnelName() writes randomUUID()'s lower-case form; anything else was made by someone else.
    return UUID_RE.test(rest) ? rest : null;
  }

  async #loadRows(keys: { ids: string[]; cfTunnelIds: string[]; dnsRecordIds: string[]; liveHostnames: string[] }): Promise<RowRef[]> {
    const rows = new Map<string, RowRef>();
    const load = async (values: string[], where: (chunk: string[]) => Prisma.TunnelWhereInput) => {
      for (let i = 0; i < values.length; i += DB_CHUNK) {
        const found = await this.#prisma.tunnel.findMany({ where: where(values.slice(i, i + DB_CHUNK)), select: ROW_REF_SELECT });
        for (const row of found) rows.set(row.id, row);
      }
    };
    await load(keys.ids, (chunk) => ({ id: { in: chunk } }));
    await load(keys.cfTunnelIds, (chunk) => ({ cfTunnelId: { in: chunk } }));
    await load(keys.dnsRecordIds, (chunk) => ({ dnsRecordId: { in: chunk } }));
    // Ended rows share hostnames with every later tunnel of the same slug; only live ones matter here.
    await load(keys.liveHostnames, (chunk) => ({ hostname: { in: chunk }, status: { not: 'ended' } }));
    return [...rows.values()];
  }

  #rowsForTunnel(rowId: string, cfTunnelId: string): Promise<RowRef[]> {
    return this.#prisma.tunnel.findMany({ where: { OR: [{ id: rowId }, { cfTunnelId }] }, select: ROW_REF_SELECT });
  }

  #rowsForRecord(recordId: string, hostname: string, target: string, targetRowId: string | null): Promise<RowRef[]> {
    return this.#prisma.tunnel.findMany({
      where: { OR: [{ dnsRecordId: recordId }, { cfTunnelId: target }, ...(targetRowId ? [{ id: targetRowId }] : []), { hostname, status: { not: 'ended' } }] },
      select: ROW_REF_SELECT,
    });
  }

  async #acquireLock(): Promise<PassLock | undefined> {
    const token = randomUUID();
    const acquired = await this.#redis.set(LOCK_KEY, token, 'PX', this.#lockLeaseMs, 'NX');
    if (acquired !== 'OK') return undefined;
    let lost = false;
    let renewing: Promise<void> | undefined;
    const timer = setInterval(() => {
      renewing ??= this.#redis.tbReconcileRenew(LOCK_KEY, token, this.#lockLeaseMs)
        .then((renewed) => {
          if (renewed !== 1) lost = true;
        })
        .catch((error: unknown) => {
          // Unsure whether the lease still holds: stop deleting rather than risk two reconcilers.
          lost = true;
          this.#log.warn({ err: error, event: LogEvent.reconcileFailed }, 'could not renew the reconcile lock');
        })
        .finally(() => {
          renewing = undefined;
        });
    }, Math.max(1, Math.floor(this.#lockLeaseMs / 3)));
    return {
      get lost() {
        return lost;
      },
      release: async () => {
        clearInterval(timer);
        await renewing;
        // If this fails the lease simply runs out; the pass itself is done either way.
        await this.#redis.tbReconcileRelease(LOCK_KEY, token).catch((error: unknown) => {
          this.#log.warn({ err: error }, 'could not release the reconcile lock');
        });
      },
    };
  }
}

const ROW_REF_SELECT = { id: true, status: true, cfTunnelId: true, dnsRecordId: true, hostname: true } as const;

function isLive(row: RowRef): boolean {
  return row.status !== 'ended';
}

/** A row references a record by its stored id, or by hostname and the tunnel it points at. */
function referencesRecord(row: RowRef, recordId: string, hostname: string, target: string, targetRowId: string | null): boolean {
  if (row.dnsRecordId === recordId) return true;
  if (row.hostname.toLowerCase() !== hostname) return false;
  // A row still creating has no cf_tunnel_id yet; the tunnel's name ties the record to it.
  return row.cfTunnelId?.toLowerCase() === target || row.id === targetRowId;
}

function tunnelEntry(tunnel: ListedTunnel, rowId: string | null): ReconcileEntry {
  return { resource: 'tunnel', id: tunnel.id, name: tunnel.name, createdAt: tunnel.createdAt, rowId };
}

function recordEntry(record: ListedDnsRecord, rowId: string | null): ReconcileEntry {
  return { resource: 'dns_record', id: record.id, name: record.name, target: record.content, createdAt: record.createdOn, rowId };
}

async function mapWithConcurrency<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await fn(item);
    }
  });
  await Promise.all(workers);
}
