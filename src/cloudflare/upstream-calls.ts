import type Cloudflare from 'cloudflare';
import type { CloudflareSdk } from './cloudflare-sdk.js';
import { LogEvent, type Logger } from '../logging/logger.js';
import type { BudgetGate, BudgetPolicy, BudgetRequestOptions } from './budget-gate.js';
import { translateUpstreamError, UpstreamError } from './upstream-error.js';

/** Per-call SDK options: here, the budget policy of the operation the call belongs to. */
export type RequestOptions = Cloudflare.RequestOptions;

/**
 * Told about every upstream call (metrics). `outcome` is `ok`, `budget_exhausted` (refused by
 * the shared request budget, never sent) or the UpstreamError kind.
 */
export interface UpstreamCallObserver {
  upstreamCall(operation: string, outcome: string, durationSeconds: number): void;
}

/** DNS names compare case-insensitively, with or without the root's trailing dot. */
export function normalizeHost(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, '');
}

export const CFARGOTUNNEL_SUFFIX = '.cfargotunnel.com';

/**
 * What every upstream operation shares: the SDK client, the account's ids, the request
 * budget's per-operation options, and the one place where upstream failures are
 * translated, logged and measured.
 */
export class UpstreamCalls {
  readonly client: CloudflareSdk;
  readonly #log: Logger;
  readonly #budget: BudgetGate | undefined;
  readonly #observer: UpstreamCallObserver | undefined;

  /** `budget` must be the gate the client was built with; without one no policy applies. */
  constructor(client: CloudflareSdk, logger: Logger, options: { budget?: BudgetGate; observer?: UpstreamCallObserver } = {}) {
    this.client = client;
    this.#log = logger;
    this.#budget = options.budget;
    this.#observer = options.observer;
  }

  get log(): Logger {
    return this.#log;
  }

  /** SDK options that put one operation's requests under the budget `policy` (none without a budget). */
  budgetOptions(policy: BudgetPolicy, options: BudgetRequestOptions = {}): RequestOptions {
    // The gate's fetchOptions hold only its own symbol-keyed field, which the SDK's type
    // (RequestInit fields) cannot name; the SDK passes it through to the gate's fetch.
    return this.#budget ? (this.#budget.requestOptions(policy, options) as RequestOptions) : {};
  }

  /** Every SDK call goes through here: the one place upstream failures are translated, logged and measured. */
  async call<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      const result = await fn();
      this.#observer?.upstreamCall(operation, 'ok', (performance.now() - started) / 1000);
      return result;
    } catch (error) {
      const upstream = translateUpstreamError(operation, error);
      this.#observer?.upstreamCall(operation, upstream.budgetExhausted ? 'budget_exhausted' : upstream.kind, (performance.now() - started) / 1000);
      if (upstream.kind !== 'not_found') {
        this.#log.warn(
          { event: LogEvent.upstreamFailure, operation, kind: upstream.kind, status: upstream.status, cloudflareCodes: upstream.cloudflareCodes },
          upstream.message,
        );
      }
      throw upstream;
    }
  }

  /** Already gone (404) counts as done. */
  async ignoreNotFound(promise: Promise<unknown>): Promise<void> {
    try {
      await promise;
    } catch (error) {
      if (error instanceof UpstreamError && error.kind === 'not_found') return;
      throw error;
    }
  }
}
