import type { RequestBudget } from './request-budget.js';
import { retryAfterMs } from './retry-after.js';
import { BUDGET_RETRY_AFTER_MS_HEADER, CF_ERROR } from './upstream-error.js';

/** What a request does when the budget is spent: refuse at once (creates) or wait its turn (teardowns, lists). */
export type BudgetPolicy = 'fail' | 'wait';

type Fetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/**
 * How long a 'wait' operation waits for the budget in total: below the API's 30 s request
 * timeout, so a DELETE that waits still answers (with 503 + Retry-After if the bound is hit,
 * the tunnel staying `ending` for the reaper).
 */
export const MAX_BUDGET_WAIT_MS = 20_000;

export interface BudgetGateOptions {
  /** The per-request timeout the SDK was given (CLOUDFLARE_TIMEOUT_MS). */
  requestTimeoutMs: number;
  /** Total wait of one 'wait' operation; default min(window + 1 s, MAX_BUDGET_WAIT_MS). */
  maxWaitMs?: number;
  /** Slots per window that 'fail' callers leave to 'wait' callers; default 10 % of the budget. */
  reserveForWaiters?: number;
}

/**
 * Where an operation's budget context rides to the fetch: a symbol-keyed field of the SDK's
 * per-request `fetchOptions`, which the SDK spreads into the RequestInit of every attempt
 * and every page of a list: explicit, so each call states the policy it runs under.
 */
const BUDGET_CONTEXT = Symbol('tunnel-broker.budget-context');

interface GateContext {
  policy: BudgetPolicy;
  /** 'wait' only: every request of the operation shares this deadline. */
  waitUntil: number;
  /** 'fail' only: how many slots the operation's first request takes for the whole operation. */
  prepay: number;
  /** Slots taken by an earlier request of this operation and not yet used: spent without Redis. */
  prepaid: number;
}

/** What an operation declares up front about its requests. */
export interface BudgetRequestOptions {
  /**
   * 'fail' only: the operation will make about this many requests (a create: the tunnel,
   * then its DNS record and ingress). Its first request takes that many slots in one Redis
   * call, as many as are free, and the next ones spend them; past them, each request takes
   * its own. Slots taken and not spent (the operation failed early) count until the window
   * passes them: the budget errs on Cloudflare's side.
   */
  prepay?: number;
}

/**
 * Puts every request the Cloudflare SDK sends through the shared RequestBudget.
 *
 * It wraps the SDK's `fetch`, which the SDK calls once per attempt, so its own retries
 * and every page of a list count too. Callers choose the policy of an operation by passing
 * `requestOptions(policy)` to each SDK call it makes; a request without one gets 'wait'.
 *
 * A refused request never reaches the network: the SDK receives a synthetic 429 marked
 * as ours (BUDGET_RETRY_AFTER_MS_HEADER) and `x-should-retry: false`, so it does not
 * retry it, and translateUpstreamError turns it into a `rate_limited` UpstreamError with
 * `budgetExhausted` set and the time until a slot frees as its Retry-After.
 *
 * Creates may use the budget only up to `requests - reserve`: a storm of creates can
 * never leave teardowns (which free quota and slugs) without a turn.
 */
export class BudgetGate {
  readonly budget: RequestBudget;
  readonly maxWaitMs: number;
  readonly reserveForWaiters: number;
  readonly #requestTimeoutMs: number;
  readonly #closing = new AbortController();

  constructor(budget: RequestBudget, options: BudgetGateOptions) {
    this.budget = budget;
    this.#requestTimeoutMs = options.requestTimeoutMs;
    this.maxWaitMs = options.maxWaitMs ?? Math.min(budget.windowMs + 1_000, MAX_BUDGET_WAIT_MS);
    this.reserveForWaiters = options.reserveForWaiters ?? Math.floor(budget.requests / 10);
  }

  /**
   * Shutting down: nobody waits for the budget any more (a waiting teardown fails as
   * transient at once and stays `ending` for a reaper), so a wait cannot outlast the
   * shutdown grace period. Requests that find a free slot still go.
   */
  close(): void {
    this.#closing.abort();
  }

  /** A 429 from Cloudflare itself (never the gate's own refusals, which do not come this way) is remembered: see RequestBudget.markRefused. */
  async #noteRefusal(response: Response): Promise<Response> {
    if (response.status !== 429) return response;
    await this.budget.markRefused(retryAfterMs(response.headers) ?? DEFAULT_CLOUDFLARE_BLOCK_MS).catch(() => {});
    return response;
  }

  /**
   * SDK request options that put one operation's requests under `policy`: pass the same
   * object to each of its SDK calls, so a 'wait' operation shares one deadline.
   */
  requestOptions(policy: BudgetPolicy, options: BudgetRequestOptions = {}): { fetchOptions: { [BUDGET_CONTEXT]: GateContext } } {
    const prepay = policy === 'fail' ? Math.max(1, Math.floor(options.prepay ?? 1)) : 1;
    return { fetchOptions: { [BUDGET_CONTEXT]: { policy, waitUntil: Date.now() + this.maxWaitMs, prepay, prepaid: 0 } } };
  }

  wrapFetch(upstream: Fetch): Fetch {
    const fetch: Fetch = async (input, init) => this.#noteRefusal(await upstream(input, init));
    return async (input, gatedInit) => {
      const { [BUDGET_CONTEXT]: carried, ...init } = (gatedInit ?? {}) as RequestInit & { [BUDGET_CONTEXT]?: GateContext };
      const context = carried ?? { policy: 'wait', waitUntil: Date.now() + this.maxWaitMs, prepay: 1, prepaid: 0 };
      if (context.policy === 'fail') {
        if (context.prepaid > 0) {
          context.prepaid--;
          return fetch(input, init);
        }
        const wanted = context.prepay;
        context.prepay = 1;
        const decision = await this.budget.tryAcquireUpTo(wanted, { reserve: this.reserveForWaiters });
        if (!decision.ok) return budgetExhaustedResponse(decision.retryAfterMs);
        context.prepaid += decision.taken - 1;
        return fetch(input, init);
      }
      const closing = this.#closing.signal;
      const waited = await this.budget
        .acquire({ maxWaitMs: closing.aborted ? 0 : context.waitUntil - Date.now(), signal: closing })
        .catch((error: unknown) => {
          if (closing.aborted) return { ok: false as const, retryAfterMs: CLOSED_RETRY_AFTER_MS };
          throw error;
        });
      if (!waited.ok) return budgetExhaustedResponse(waited.retryAfterMs);
      if (waited.waitedMs === 0) return fetch(input, init);
      // The SDK's timeout clock started before this call and may have run out while we
      // waited for the budget: the request itself gets a full timeout of its own.
      return fetch(input, { ...init, signal: AbortSignal.timeout(this.#requestTimeoutMs) });
    };
  }
}

/** How long a 429 without Retry-After is remembered: Cloudflare blocks a token past its limit for five minutes. */
export const DEFAULT_CLOUDFLARE_BLOCK_MS = 300_000;

/** What a wait cut short by shutdown reports: another instance (or this one, restarted) soon takes over. */
const CLOSED_RETRY_AFTER_MS = 1_000;

function budgetExhaustedResponse(retryAfterMs: number): Response {
  const body = {
    success: false,
    errors: [{ code: CF_ERROR.RATE_LIMITED, message: "The broker's Cloudflare request budget is spent; the request was not sent." }],
    messages: [],
    result: null,
  };
  return new Response(JSON.stringify(body), {
    status: 429,
    headers: {
      'content-type': 'application/json',
      'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))),
      [BUDGET_RETRY_AFTER_MS_HEADER]: String(Math.max(1, Math.round(retryAfterMs))),
      'x-should-retry': 'false',
    },
  });
}
