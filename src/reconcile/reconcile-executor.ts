import type { TunnelProvider } from '../cloudflare/tunnel-provider.js';
import { isUpstreamError } from '../cloudflare/upstream-error.js';
import { LogEvent, type Logger } from '../logging/logger.js';
import { mapWithConcurrency } from '../util/map-with-concurrency.js';
import { type Candidate, isLive, type Plan, referencingRows } from './reconcile-planner.js';
import type { Interruption, ReconcileReport } from './reconcile-report.js';
import type { ReconcileRows } from './reconcile-rows.js';

export interface ExecutorOptions {
  provider: TunnelProvider;
  rows: ReconcileRows;
  logger: Logger;
  /** Upstream deletions in flight at once. */
  concurrency: number;
  /** Deletions per pass; the rest are reported as `pass_limit` and wait for the next pass. */
  maxDeletionsPerPass: number;
}

/**
 * How a pass runs. A dry run deletes nothing and reports every candidate as removed. A real
 * one asks `interruption()` before each deletion, and stops starting new ones once it names
 * a reason (the reconciler stopping, its lock lost).
 */
export type ExecutionMode = { dryRun: true } | { dryRun: false; interruption: () => Interruption | undefined };

/**
 * Carries out a plan: DNS records first, then tunnels no remaining record points at, at most
 * `maxDeletionsPerPass` in all, each after a fresh look at the database. Results go into the
 * report; a deletion that fails is reported, never thrown.
 */
export class ReconcileExecutor {
  readonly #provider: TunnelProvider;
  readonly #rows: ReconcileRows;
  readonly #log: Logger;
  readonly #concurrency: number;
  readonly #maxDeletions: number;

  constructor(options: ExecutorOptions) {
    this.#provider = options.provider;
    this.#rows = options.rows;
    this.#log = options.logger;
    this.#concurrency = options.concurrency;
    this.#maxDeletions = options.maxDeletionsPerPass;
  }

  async execute(plan: Plan, report: ReconcileReport, mode: ExecutionMode): Promise<void> {
    let budget = this.#maxDeletions;
    const take = (candidates: Candidate[]) => {
      const taken = candidates.slice(0, Math.max(0, budget));
      for (const c of candidates.slice(taken.length)) report.skipped.push({ ...c.entry, reason: 'pass_limit' });
      budget -= taken.length;
      return taken;
    };
    // Records first: once its tunnel is gone, a record's ownership may no longer be provable upstream.
    await this.#run(take(plan.records), report, mode);
    let removedIds = new Set(report.removed.map((r) => r.id));
    // Access applications after the records of their hostname (never a resolving hostname
    // without its gate), their policies after them (a policy in use cannot be deleted).
    const apps = plan.accessApps.filter((c) => {
      const hostname = c.ref.resource === 'access_app' ? c.ref.hostname : null;
      const remaining = [...(hostname ? plan.recordsByHostname.get(hostname) ?? [] : [])].filter((id) => !removedIds.has(id));
      if (remaining.length > 0) report.skipped.push({ ...c.entry, reason: 'dns_record_remains' });
      return remaining.length === 0;
    });
    await this.#run(take(apps), report, mode);
    removedIds = new Set(report.removed.map((r) => r.id));
    const keptAppRows = new Set(plan.accessApps.filter((c) => !removedIds.has(c.entry.id)).map((c) => c.entry.rowId));
    const policies = plan.accessPolicies.filter((c) => {
      if (keptAppRows.has(c.entry.rowId)) report.skipped.push({ ...c.entry, reason: 'access_app_remains' });
      return !keptAppRows.has(c.entry.rowId);
    });
    await this.#run(take(policies), report, mode);
    const tunnels = plan.tunnels.filter((c) => {
      const cfTunnelId = c.entry.id.toLowerCase();
      const remaining = [...(plan.recordsByTarget.get(cfTunnelId) ?? [])].filter((id) => !removedIds.has(id));
      if (remaining.length > 0) report.skipped.push({ ...c.entry, reason: 'dns_record_remains' });
      return remaining.length === 0;
    });
    await this.#run(take(tunnels), report, mode);
  }

  async #run(candidates: Candidate[], report: ReconcileReport, mode: ExecutionMode): Promise<void> {
    if (mode.dryRun) {
      for (const c of candidates) report.removed.push({ ...c.entry, reason: c.reason });
      return;
    }
    await mapWithConcurrency(candidates, this.#concurrency, async (c) => {
      const stoppedBy = mode.interruption() ?? report.interruptedBy;
      if (stoppedBy) {
        report.interruptedBy ??= stoppedBy;
        report.skipped.push({ ...c.entry, reason: 'interrupted' });
        return;
      }
      let live: boolean;
      try {
        live = referencingRows(c.ref, await this.#rows.forRef(c.ref)).some(isLive);
      } catch (error) {
        // Without the re-check nothing may be deleted; the next pass tries again.
        this.#fail(report, c, error, 'could not re-check the database; not removing');
        report.interruptedBy ??= 'database_unavailable';
        return;
      }
      if (live) {
        report.skipped.push({ ...c.entry, reason: 'live_row_on_recheck' });
        return;
      }
      try {
        const budget = this.#provider.housekeepingBudget();
        if (c.ref.resource === 'tunnel') await this.#provider.removal.removeTunnel(c.entry.id, budget);
        else if (c.ref.resource === 'access_app') await this.#provider.access.deleteApp(c.entry.id, budget);
        else if (c.ref.resource === 'access_policy') await this.#provider.access.deletePolicy(c.entry.id, budget);
        else await this.#provider.removal.deleteDnsRecord(c.entry.id, budget);
      } catch (error) {
        this.#fail(report, c, error, 'removing an upstream orphan failed');
        // Cloudflare is down or the budget is spent: the rest would only fail the same way.
        if (isUpstreamError(error) && error.transient) report.interruptedBy ??= 'upstream_unavailable';
        return;
      }
      report.removed.push({ ...c.entry, reason: c.reason });
      this.#log.info({ event: LogEvent.reconcileDeleted, ...c.entry, tunnelId: c.entry.rowId ?? undefined, reason: c.reason }, 'upstream orphan removed');
      await this.#audit(c);
    });
  }

  #fail(report: ReconcileReport, c: Candidate, error: unknown, message: string): void {
    report.failed.push({ ...c.entry, reason: c.reason, error: error instanceof Error ? error.message : String(error) });
    this.#log.warn({ event: LogEvent.reconcileDeleteFailed, err: error, ...c.entry, reason: c.reason }, message);
  }

  /**
   * Leftovers of an ended row go into that tunnel's audit trail; with no row there is no
   * trail to add to (the log line has it). Best effort: the removal itself has happened.
   */
  async #audit(c: Candidate): Promise<void> {
    if (c.reason !== 'row_ended' || c.entry.rowId === null) return;
    try {
      await this.#rows.recordOrphanRemoved(c.entry.rowId, c);
    } catch (error) {
      this.#log.warn({ err: error, tunnelId: c.entry.rowId }, 'could not record the removal in the audit trail');
    }
  }
}
