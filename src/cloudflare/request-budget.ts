import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RedisClient as Redis } from '../redis/redis-client.js';
import { NOW_MS } from '../redis/lua-snippets.js';

/**
 * A request budget shared through Redis by every broker instance: no window of
 * `windowSeconds` ever holds more than `requests` admitted requests, whichever
 * instances made them.
 *
 * It is a true sliding window, a sorted set of admission times, rather than a token
 * bucket or fixed windows: both of those let up to twice the limit through across a
 * boundary, and Cloudflare blocks the account for five minutes at the first request
 * past its limit. Times come from Redis's own clock (TIME inside the script), so
 * instances with skewed clocks still agree, and admission is one atomic script, so
 * concurrent callers can never both take the last slot.
 *
 * Memory is bounded: the set never holds more than `requests` entries, and it expires
 * one window after the last admission.
 */

/** Relative key (the client's keyPrefix applies). */
export const DEFAULT_REQUEST_BUDGET_KEY = 'cf-budget';

export type BudgetDecision = { ok: true } | { ok: false; retryAfterMs: number };
export type BudgetWaitResult = { ok: true; waitedMs: number } | { ok: false; retryAfterMs: number };

export interface RequestBudgetOptions {
  requests: number;
  windowSeconds: number;
  /** Relative key of the sorted set; defaults to DEFAULT_REQUEST_BUDGET_KEY. */
  key?: string;
}

export interface AcquireOptions {
  /** Slots to leave free for others: admit only while fewer than `requests - reserve` are in the window. */
  reserve?: number;
}

export interface WaitOptions extends AcquireOptions {
  /** Give up once waiting longer would be needed; 0 means try once. */
  maxWaitMs: number;
  signal?: AbortSignal;
}

// KEYS: the log. ARGV: limit (already net of any reserve), windowMs, member, wanted.
// An entry admitted at s counts while now < s + window, so entries at or before
// now - window are dropped first. Admits (and records) up to `wanted` entries, as many as
// fit below `limit`; members past the first get a suffix, so each is its own entry.
// When none fits, the caller can go once enough of the oldest entries expire that fewer
// than `limit` remain: that is the entry at rank count - limit, whose time + window - now is
// the wait (>= 1 ms, since it is still in the window).
// Returns {admitted, 0} (admitted >= 1) or {0, retryAfterMs}.
const ACQUIRE = `${NOW_MS}
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local wanted = math.max(1, tonumber(ARGV[4]) or 1)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  local take = math.min(wanted, limit - count)
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  for i = 2, take do
    redis.call('ZADD', KEYS[1], now, ARGV[3] .. '#' .. i)
  end
  redis.call('PEXPIRE', KEYS[1], window)
  return {take, 0}
end
if limit < 1 then return {0, window} end
local nth = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
return {0, math.max(1, tonumber(nth[2]) + window - now)}
`;

// KEYS: the log. ARGV: limit, windowMs. Returns the slots free right now.
const REMAINING = `${NOW_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return math.max(0, tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1]))
`;

interface BudgetCommands {
  tbBudgetAcquire(key: string, limit: number, windowMs: number, member: string, wanted: number): Promise<[number, number]>;
  tbBudgetRemaining(key: string, limit: number, windowMs: number): Promise<number>;
}

/** A waiter never sleeps less than this, so a burst of refusals cannot spin on Redis. */
const MIN_POLL_MS = 5;
/** Spreads waiters that were told the same instant, so they do not all hit Redis at once. */
const MAX_POLL_JITTER_MS = 25;
/** Hard stop for the wait loop, whatever the clocks say. */
const MAX_WAIT_ROUNDS = 100_000;

export class RequestBudget {
  readonly requests: number;
  readonly windowMs: number;
  readonly #redis: Redis & BudgetCommands;
  readonly #key: string;
  /** Set while Cloudflare's last 429 for this token holds (see markRefused). */
  readonly #refusedKey: string;
  /** Members must be unique: two admissions in one millisecond are two entries. */
  readonly #memberPrefix = randomBytes(6).toString('base64url');
  #sequence = 0;

  constructor(redis: Redis, options: RequestBudgetOptions) {
    if (!Number.isInteger(options.requests) || options.requests < 1) throw new RangeError('requests must be a positive integer');
    if (!(options.windowSeconds > 0)) throw new RangeError('windowSeconds must be positive');
    const commands = redis as Redis & Partial<BudgetCommands>;
    if (!commands.tbBudgetAcquire) {
      redis.defineCommand('tbBudgetAcquire', { numberOfKeys: 1, lua: ACQUIRE });
      redis.defineCommand('tbBudgetRemaining', { numberOfKeys: 1, lua: REMAINING });
    }
    this.#redis = redis as Redis & BudgetCommands;
    this.requests = options.requests;
    this.windowMs = Math.round(options.windowSeconds * 1000);
    this.#key = options.key ?? DEFAULT_REQUEST_BUDGET_KEY;
    this.#refusedKey = `${this.#key}:refused`;
  }

  /** Takes a slot now, or says how long until one frees up. One Redis round trip. */
  async tryAcquire(options: AcquireOptions = {}): Promise<BudgetDecision> {
    const taken = await this.tryAcquireUpTo(1, options);
    return taken.ok ? { ok: true } : taken;
  }

  /**
   * Takes up to `wanted` slots at once, as many as are free (at least one), or says how long
   * until one frees up: an operation that knows it will make several requests pays one Redis
   * round trip for all of them. One Redis round trip.
   */
  async tryAcquireUpTo(wanted: number, options: AcquireOptions = {}): Promise<{ ok: true; taken: number } | { ok: false; retryAfterMs: number }> {
    const limit = this.requests - this.#reserve(options.reserve);
    const member = `${this.#memberPrefix}:${(this.#sequence = (this.#sequence + 1) % Number.MAX_SAFE_INTEGER)}`;
    const [taken, retryAfterMs] = await this.#redis.tbBudgetAcquire(this.#key, limit, this.windowMs, member, Math.max(1, Math.floor(wanted)));
    return taken >= 1 ? { ok: true, taken: Number(taken) } : { ok: false, retryAfterMs: Number(retryAfterMs) };
  }

  /**
   * Waits for a slot, at most `maxWaitMs`. Gives up early, without sleeping, when the
   * budget says the next slot frees only after that bound. Rejects if `signal` aborts
   * (an aborted signal still gets one try: a free slot is taken, only the wait is refused).
   */
  async acquire(options: WaitOptions): Promise<BudgetWaitResult> {
    const started = Date.now();
    const deadline = started + Math.max(0, options.maxWaitMs);
    let last: BudgetDecision = { ok: false, retryAfterMs: this.windowMs };
    for (let round = 0; round < MAX_WAIT_ROUNDS; round++) {
      last = await this.tryAcquire(options);
      // waitedMs is 0 when no sleep was needed, so callers can tell "went at once" apart.
      if (last.ok) return { ok: true, waitedMs: round === 0 ? 0 : Date.now() - started };
      const left = deadline - Date.now();
      if (last.retryAfterMs > left) return last;
      options.signal?.throwIfAborted();
      // Others may take the slot first (they are told the same time); then we are told anew.
      const jitter = Math.random() * Math.min(MAX_POLL_JITTER_MS, Math.max(0, left - last.retryAfterMs));
      await sleep(Math.max(MIN_POLL_MS, last.retryAfterMs + jitter), undefined, { signal: options.signal });
    }
    return last;
  }

  /**
   * Cloudflare answered one of this token's requests with 429. Its limit counts every client
   * of the token, not only the broker, so the token may be blocked (for five minutes) whatever
   * the broker's own count says. Remembered for `ms`, for every instance: placement sends new
   * tunnels to other accounts meanwhile. Requests are not refused because of it; Cloudflare
   * answers them itself, and its Retry-After reaches the caller as before.
   */
  async markRefused(ms: number): Promise<void> {
    await this.#redis.set(this.#refusedKey, '1', 'PX', Math.max(1, Math.round(ms)));
  }

  /** How long the last 429 from Cloudflare is still remembered, ms (0: none). */
  async refusedForMs(): Promise<number> {
    const ttl = await this.#redis.pttl(this.#refusedKey);
    return ttl > 0 ? ttl : 0;
  }

  /** Slots free right now (ignoring any reserve). */
  remaining(): Promise<number> {
    return this.#redis.tbBudgetRemaining(this.#key, this.requests, this.windowMs);
  }

  #reserve(reserve: number | undefined): number {
    // Never reserve the whole budget: a caller asking with a reserve must still be able to go.
    return Math.min(Math.max(0, Math.floor(reserve ?? 0)), this.requests - 1);
  }
}
