import type { RedisClient as Redis } from '../redis/redis-client.js';
import type { TunnelProvider } from '../cloudflare/tunnel-provider.js';
import type { PrismaClient } from '../generated/prisma/client.js';
import { isUpstreamError } from '../cloudflare/upstream-error.js';
import { PeriodicTimer } from '../lifecycle/periodic-timer.js';
import { LogEvent, type Logger } from '../logging/logger.js';
import { ReconcileExecutor } from './reconcile-executor.js';
import { ReconcileLock } from './reconcile-lock.js';
import { planRemovals, type PlannerOptions, rowKeysFor } from './reconcile-planner.js';
import type { ReconcileReport } from './reconcile-report.js';
import { ReconcileRows } from './reconcile-rows.js';

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
  /** The pass lock's key: one per Cloudflare account, so accounts are reconciled independently. */
  lockKey?: string;
}

/**
 * Removes what the broker left behind upstream: tunnels under its name prefix and tunnel
 * CNAMEs under its domain that no live row references, once they are older than the grace
 * period. Crashes, lost responses and failed rollbacks all end up here eventually.
 *
 * A pass: take the lock (ReconcileLock), list upstream, read the rows the listing may
 * concern, decide (reconcile-planner), delete (ReconcileExecutor), release the lock.
 *
 * Contracts:
 * - `start()` and `stop()` are idempotent; `stop()` waits for the running pass.
 * - Passes never overlap within a process; across processes the Redis lock lets one run at
 *   a time. A dry run deletes nothing and takes no lock.
 * - It touches only what it owns (see reconcile-planner); anything else is at most reported.
 * - Upstream is listed before the database is read, and a create inserts its row before it
 *   creates anything upstream, so whatever a create made is seen with its row. Each delete
 *   re-reads the database for that one resource first, and the grace period covers the rest.
 * - Lists are read to the last page. DNS records are removed before tunnels, so a record
 *   never outlives the tunnel that proves it is ours.
 */
export class Reconciler {
  readonly #provider: TunnelProvider;
  readonly #log: Logger;
  readonly #planner: PlannerOptions;
  readonly #intervalMs: number;
  readonly #perPage: number;
  readonly #rows: ReconcileRows;
  readonly #lock: ReconcileLock;
  readonly #executor: ReconcileExecutor;
  readonly #timer: PeriodicTimer;
  #running: { dryRun: boolean; promise: Promise<ReconcileReport> } | undefined;
  #stopping = false;

  constructor(options: ReconcilerOptions) {
    this.#provider = options.provider;
    this.#log = options.logger;
    this.#planner = {
      tunnelDomain: options.tunnelDomain.toLowerCase(),
      tunnelNamePrefix: options.tunnelNamePrefix,
      graceMs: options.graceMs ?? DEFAULT_RECONCILE_GRACE_MS,
    };
    this.#intervalMs = options.intervalMs ?? DEFAULT_RECONCILE_INTERVAL_MS;
    this.#perPage = options.perPage ?? DEFAULT_RECONCILE_PER_PAGE;
    this.#rows = new ReconcileRows(options.prisma);
    this.#lock = new ReconcileLock({ redis: options.redis, logger: options.logger, leaseMs: options.lockLeaseMs ?? DEFAULT_RECONCILE_LOCK_LEASE_MS, ...(options.lockKey ? { key: options.lockKey } : {}) });
    this.#executor = new ReconcileExecutor({
      provider: options.provider,
      rows: this.#rows,
      logger: options.logger,
      concurrency: options.concurrency ?? DEFAULT_RECONCILE_CONCURRENCY,
      maxDeletionsPerPass: options.maxDeletionsPerPass ?? DEFAULT_RECONCILE_MAX_DELETIONS,
    });
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
    this.#log.info({ intervalMs: this.#intervalMs, graceMs: this.#planner.graceMs }, 'reconciler started');
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
      graceSeconds: this.#planner.graceMs / 1000,
      listed: { tunnels: 0, dnsRecords: 0 },
      removed: [],
      skipped: [],
      failed: [],
    };
    const lock = dryRun ? undefined : await this.#lock.acquire();
    if (!dryRun && !lock) {
      report.status = 'locked';
      report.durationMs = Math.round(performance.now() - started);
      this.#log.debug({ event: LogEvent.reconcilePass, status: report.status }, 'another instance is reconciling');
      return report;
    }
    try {
      // Upstream first, the database second: see the class contract.
      const [tunnels, records, access] = await Promise.all([
        this.#provider.listings.listTunnelsUnderPrefix({ perPage: this.#perPage }),
        this.#provider.listings.listTunnelDnsRecords(this.#planner.tunnelDomain, { perPage: this.#perPage }),
        // A token without Access permissions cannot have made Access objects: the pass goes on without them.
        this.#provider.access.listUnderPrefix({ perPage: this.#perPage }).catch((error: unknown) => {
          if (!isUpstreamError(error) || error.kind !== 'unauthorized') throw error;
          this.#log.debug({ event: LogEvent.reconcilePass }, 'the token cannot list Access applications; skipping them');
          return undefined;
        }),
      ]);
      report.listed = { tunnels: tunnels.length, dnsRecords: records.length, ...(access ? { accessApps: access.apps.length, accessPolicies: access.policies.length } : {}) };
      const listing = { tunnels, records, ...(access ? { accessApps: access.apps, accessPolicies: access.policies } : {}) };
      if (access && !dryRun) {
        // The team gate is made once per process; if it vanished upstream, it is made again here.
        const restored = await this.#provider.access.restoreTeamGate(access.apps).catch((error: unknown) => {
          this.#log.warn({ err: error, event: LogEvent.reconcilePass }, 'the Access team gate is missing and could not be made again');
          return false;
        });
        if (restored) this.#log.warn({ event: LogEvent.reconcilePass }, 'the Access team gate was missing upstream; made it again');
      }
      const rows = await this.#rows.load(rowKeysFor(listing, this.#planner));
      const plan = planRemovals(listing, rows, Date.now(), this.#planner);
      report.skipped.push(...plan.skipped);
      await this.#executor.execute(plan, report, lock
        ? { dryRun: false, interruption: () => (this.#stopping ? 'stopping' : lock.lost ? 'lock_lost' : undefined) }
        : { dryRun: true });
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
}
