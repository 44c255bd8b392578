import type { RedisClient as Redis } from '../redis/redis-client.js';
import type { AccessConfig, CloudflareAccount, CloudflareConfig } from '../config/env.js';
import type { Logger } from '../logging/logger.js';
import { BudgetGate } from './budget-gate.js';
import { createCloudflareClient } from './cloudflare-client.js';
import { DEFAULT_REQUEST_BUDGET_KEY, RequestBudget } from './request-budget.js';
import { TunnelProvider, type UpstreamCallObserver } from './tunnel-provider.js';

/** One account's own client, request budget and provider: nothing is shared between accounts. */
export interface AccountHandle {
  account: CloudflareAccount;
  /** The shared Cloudflare settings with this account's token, ids and base URL. */
  config: CloudflareConfig;
  budget: BudgetGate;
  provider: TunnelProvider;
}

/** What insert_live_tunnel_placed chooses among: the accounts in order, each with its capacity and domain. */
export interface Placement {
  accountIds: string[];
  /** The primary account's id: rows with no account recorded count against it. */
  primaryAccountId: string;
  capacities: number[];
  domains: string[];
}

/**
 * Thrown for a row whose account is no longer configured. The broker refuses to boot while
 * live rows name one (see account-coverage.ts), so this means a row appeared meanwhile from
 * a broker with another configuration.
 */
export class UnknownAccountError extends Error {
  constructor(readonly accountId: string) {
    super(`Cloudflare account ${accountId} is not configured (CLOUDFLARE_ACCOUNTS)`);
    this.name = 'UnknownAccountError';
  }
}

/** The shared settings with one account's credentials: what the SDK client and the provider of that account are built from. */
export function accountConfig(base: CloudflareConfig, account: CloudflareAccount): CloudflareConfig {
  return { ...base, apiToken: account.apiToken, accountId: account.accountId, zoneId: account.zoneId, baseUrl: account.baseUrl, accounts: [account] };
}

/**
 * The request budget's Redis key for the account at `index`: the primary keeps the key the
 * single-account broker always used, so an upgrade does not forget the current window; the
 * others get one key each, so a blocked token never stalls another account.
 */
export function budgetKey(index: number, account: CloudflareAccount): string {
  return index === 0 ? DEFAULT_REQUEST_BUDGET_KEY : `${DEFAULT_REQUEST_BUDGET_KEY}:${account.accountId}`;
}

/**
 * Every Cloudflare account the broker uses, each with its own client, budget and provider.
 * A tunnel's row records its account; whatever is done to the tunnel later (teardown, the
 * reaper, the reconciler, an audience change) goes through that account's handle, never the
 * primary's by default.
 */
export class CloudflareAccounts {
  readonly all: readonly AccountHandle[];
  readonly #byId: ReadonlyMap<string, AccountHandle>;

  constructor(handles: AccountHandle[]) {
    if (handles.length === 0) throw new Error('CloudflareAccounts: at least one account');
    this.all = handles;
    this.#byId = new Map(handles.map((h) => [h.account.accountId, h]));
  }

  /** Builds one handle per configured account. */
  static build(options: {
    config: CloudflareConfig;
    redis: Redis;
    logger: Logger;
    observer?: UpstreamCallObserver | undefined;
    access?: { config: AccessConfig } | undefined;
  }): CloudflareAccounts {
    const { config } = options;
    return new CloudflareAccounts(config.accounts.map((account, index) => {
      const perAccount = accountConfig(config, account);
      const budget = new BudgetGate(new RequestBudget(options.redis, { ...config.budget, key: budgetKey(index, account) }), { requestTimeoutMs: config.timeoutMs });
      const client = createCloudflareClient(perAccount, { budget });
      const provider = new TunnelProvider(client, perAccount, options.logger.child({ account: account.name }), {
        budget,
        observer: options.observer,
        ...(options.access ? { access: { config: options.access.config, tunnelDomain: account.tunnelDomain } } : {}),
      });
      return { account, config: perAccount, budget, provider };
    }));
  }

  /** The account the single-account variables name (the first listed); rows with no account recorded are its. */
  get primary(): AccountHandle {
    return this.all[0]!;
  }

  byId(accountId: string): AccountHandle | undefined {
    return this.#byId.get(accountId);
  }

  /** The account a row lives in. */
  forRow(row: { cfAccountId: string | null }): AccountHandle {
    if (row.cfAccountId === null) return this.primary;
    const handle = this.#byId.get(row.cfAccountId);
    if (!handle) throw new UnknownAccountError(row.cfAccountId);
    return handle;
  }

  placement(handles: readonly AccountHandle[] = this.all): Placement {
    return {
      accountIds: handles.map((h) => h.account.accountId),
      primaryAccountId: this.primary.account.accountId,
      capacities: handles.map((h) => h.account.maxTunnels),
      domains: handles.map((h) => h.account.tunnelDomain),
    };
  }

  /**
   * Where a create may go: every account whose request budget can take a create now (beyond
   * the share kept for teardowns) and whose token Cloudflare has not refused lately (a 429,
   * remembered for its Retry-After), so a spent budget or a blocked token in one account sends
   * new tunnels to the others instead of failing them. A hint, read before the insert: an
   * account that spends its budget meanwhile fails that one create fast, as with one account.
   * With one account, or when no account is open, every account (the create then fails fast).
   */
  async placementForCreate(): Promise<Placement> {
    if (this.all.length === 1) return this.placement();
    const [remaining, refused] = await Promise.all([
      Promise.all(this.all.map((h) => h.budget.budget.remaining().catch(() => Number.POSITIVE_INFINITY))),
      Promise.all(this.all.map((h) => h.budget.budget.refusedForMs().catch(() => 0))),
    ]);
    const open = this.all.filter((h, i) => remaining[i]! > h.budget.reserveForWaiters && refused[i] === 0);
    return this.placement(open.length > 0 ? open : this.all);
  }

  /** Shutting down: no teardown waits for any account's budget any more. */
  close(): void {
    for (const handle of this.all) handle.budget.close();
  }
}
