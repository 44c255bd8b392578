import type { RedisClient as Redis } from '../redis/redis-client.js';
import type { CloudflareAccounts } from '../cloudflare/cloudflare-accounts.js';
import type { PrismaClient } from '../generated/prisma/client.js';
import type { Logger } from '../logging/logger.js';
import { RECONCILE_LOCK_KEY } from './reconcile-lock.js';
import type { ReconcileReport } from './reconcile-report.js';
import { Reconciler, type ReconcilerOptions } from './reconciler.js';

/** A pass over every account: each account's report, and their sum. */
export interface AccountsReconcileReport extends ReconcileReport {
  /** One report per account, by its configured name. */
  accounts?: Array<{ account: string; report: ReconcileReport }>;
}

const STATUS_RANK: Record<ReconcileReport['status'], number> = { completed: 0, interrupted: 1, locked: 2 };

/**
 * One Reconciler per Cloudflare account, each with that account's provider (token, request
 * budget), tunnel domain and pass lock: an account whose token is blocked or whose API fails
 * does not hold up the others' passes, and two brokers never reconcile the same account at once.
 * Reconciler's interface, so the reaper's process and `tunnel-broker reconcile` drive it the same way.
 */
export class AccountReconcilers {
  readonly #byName: Array<{ name: string; reconciler: Reconciler }>;

  constructor(options: Omit<ReconcilerOptions, 'provider' | 'tunnelDomain' | 'lockKey' | 'logger'> & { accounts: CloudflareAccounts; logger: Logger; redis: Redis; prisma: PrismaClient }) {
    const { accounts, ...shared } = options;
    this.#byName = accounts.all.map((handle, index) => ({
      name: handle.account.name,
      reconciler: new Reconciler({
        ...shared,
        provider: handle.provider,
        tunnelDomain: handle.account.tunnelDomain,
        logger: options.logger.child({ account: handle.account.name }),
        // The primary keeps the single-account key, so brokers of both versions never reconcile it at once during an upgrade.
        lockKey: index === 0 ? RECONCILE_LOCK_KEY : `${RECONCILE_LOCK_KEY}:${handle.account.accountId}`,
      }),
    }));
  }

  get started(): boolean {
    return this.#byName.some((r) => r.reconciler.started);
  }

  start(): void {
    for (const { reconciler } of this.#byName) reconciler.start();
  }

  async stop(): Promise<void> {
    await Promise.all(this.#byName.map(({ reconciler }) => reconciler.stop()));
  }

  /**
   * One pass over each account, all at once (each against its own budget). An account whose
   * pass fails (its listing failed) does not stop the others: with one account, the failure
   * is the answer; with several, the first failure is rethrown after every pass has run.
   */
  async reconcile(options: { dryRun?: boolean } = {}): Promise<AccountsReconcileReport> {
    const settled = await Promise.allSettled(this.#byName.map(({ reconciler }) => reconciler.reconcile(options)));
    const failure = settled.find((s) => s.status === 'rejected');
    if (failure) throw failure.reason;
    const reports = settled.map((s) => (s as PromiseFulfilledResult<ReconcileReport>).value);
    if (reports.length === 1) return reports[0]!;
    return sumReports(reports, this.#byName.map((r) => r.name));
  }
}

function sumReports(reports: ReconcileReport[], names: string[]): AccountsReconcileReport {
  const first = reports[0]!;
  const worst = reports.reduce((a, b) => (STATUS_RANK[b.status] > STATUS_RANK[a.status] ? b : a));
  const listed = { tunnels: 0, dnsRecords: 0 } as ReconcileReport['listed'];
  for (const r of reports) {
    listed.tunnels += r.listed.tunnels;
    listed.dnsRecords += r.listed.dnsRecords;
    if (r.listed.accessApps !== undefined) listed.accessApps = (listed.accessApps ?? 0) + r.listed.accessApps;
    if (r.listed.accessPolicies !== undefined) listed.accessPolicies = (listed.accessPolicies ?? 0) + r.listed.accessPolicies;
  }
  return {
    dryRun: first.dryRun,
    status: worst.status,
    ...(worst.interruptedBy ? { interruptedBy: worst.interruptedBy } : {}),
    startedAt: first.startedAt,
    durationMs: Math.max(...reports.map((r) => r.durationMs)),
    graceSeconds: first.graceSeconds,
    listed,
    removed: reports.flatMap((r) => r.removed),
    skipped: reports.flatMap((r) => r.skipped),
    failed: reports.flatMap((r) => r.failed),
    accounts: reports.map((report, i) => ({ account: names[i]!, report })),
  };
}
