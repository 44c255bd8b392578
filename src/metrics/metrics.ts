import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ErrorCode } from '../errors/catalogue.js';
import { withTimeout } from '../util/with-timeout.js';

/**
 * The broker's Prometheus metrics: one Registry per app, never prom-client's global one,
 * so several apps in one process (tests, or an embedding) each report only their own.
 *
 * Heartbeats are the hot path: they are counted in plain numbers, one per outcome, and handed
 * to prom-client only at scrape time, because prom-client hashes and validates the labels on
 * every labelled inc(). Everything else here is rare enough to use prom-client directly.
 */

export const METRIC_PREFIX = 'tunnel_broker_';

/** Tunnel statuses that count as live (everything but `ended`). */
export const LIVE_STATUSES = ['creating', 'active', 'ending'] as const;
export type LiveStatus = (typeof LIVE_STATUSES)[number];

/** Who may open a tunnel's URL (Cloudflare Access). */
export const AUDIENCES = ['team', 'public', 'emails'] as const;
export type Audience = (typeof AUDIENCES)[number];

/** Live tunnels by status, and (when the source counts them) by audience. */
export type LiveCounts = Partial<Record<LiveStatus, number>> & { audience?: Partial<Record<Audience, number>> };

export const HEARTBEAT_OUTCOMES = ['ok', 'not_found', 'unauthorized', 'forbidden', 'rejected', 'unavailable', 'error'] as const;
export type HeartbeatOutcome = (typeof HEARTBEAT_OUTCOMES)[number];

/** `replayed`: an Idempotency-Key answered with a stored response; nothing was attempted. */
export type CreateOutcome = 'created' | 'replayed' | ErrorCode;

export const REAP_OUTCOMES = ['ended', 'retry_scheduled', 'not_found', 'busy', 'lease_lost', 'failed'] as const;
export type ReapOutcome = (typeof REAP_OUTCOMES)[number];

/**
 * `create_rate`, `read_rate`, `delete_rate`, `update_rate`: CREATE_, READ_ and DELETE_RATE_LIMIT_PER_MINUTE (a PATCH counts at the DELETE rate) (RATE_LIMITED);
 * `tunnels_per_user`: MAX_TUNNELS_PER_USER (TUNNEL_LIMIT_EXCEEDED).
 */
export const RATE_LIMITS = ['create_rate', 'read_rate', 'delete_rate', 'update_rate', 'tunnels_per_user'] as const;
export type RateLimitName = (typeof RATE_LIMITS)[number];

const COLLECT_SOURCES = ['live_tunnels', 'cloudflare_budget', 'account_tunnels'] as const;
type CollectSource = (typeof COLLECT_SOURCES)[number];

/** What the scrape-time gauges read. Bound once the app's PostgreSQL and Redis exist. */
export interface MetricsSources {
  /** Tunnels that are not ended, by status (and audience): one GROUP BY query. */
  liveTunnels(): Promise<LiveCounts>;
  /** Cloudflare requests the shared budget still allows in the current window. */
  cloudflareBudgetRemaining(): Promise<number>;
  /** Live tunnels per Cloudflare account id (one GROUP BY). */
  accountTunnels?(): Promise<ReadonlyMap<string, number>>;
  /** What each account's own request budget still allows, by account id. */
  accountBudgetRemaining?(accountId: string): Promise<number>;
}

/** What the per-account gauges are labelled with and measured against: never a token. */
export interface MetricsAccount {
  name: string;
  accountId: string;
  maxTunnels: number;
}

export interface BrokerMetricsOptions {
  /** CLOUDFLARE_BUDGET_REQUESTS: reported next to what is left of it. */
  cloudflareBudgetRequests: number;
  /** The Cloudflare accounts, for the per-account gauges (labelled by name). */
  cloudflareAccounts?: readonly MetricsAccount[];
  /** How long one reading of the live-tunnel counts serves scrapes (default 5 s). */
  liveTunnelsCacheMs?: number;
  /** Bound on each scrape-time read, so a hung dependency cannot hang a scrape (default 2 s). */
  collectTimeoutMs?: number;
  /** Clock for the cache (tests). */
  now?: () => number;
  /** Registers prom-client's process and event-loop metrics (default true). */
  defaultMetrics?: boolean;
}

export const DEFAULT_LIVE_TUNNELS_CACHE_MS = 5_000;
export const DEFAULT_COLLECT_TIMEOUT_MS = 2_000;

export class BrokerMetrics {
  readonly registry = new Registry();
  readonly #options: Required<Omit<BrokerMetricsOptions, 'defaultMetrics' | 'cloudflareAccounts'>>;
  readonly #accounts: readonly MetricsAccount[];
  readonly #accountTunnels: Gauge<'account'>;
  readonly #accountRemaining: Gauge<'account'>;
  readonly #accountBudget: Gauge<'account'>;
  #sources: MetricsSources | undefined;
  #liveCache: { at: number; counts: Promise<LiveCounts | null> } | undefined;

  readonly #creates: Counter<'outcome'>;
  readonly #heartbeatCounts = zeroes(HEARTBEAT_OUTCOMES);
  readonly #reaps: Counter<'outcome'>;
  readonly #reapDelay: Histogram;
  readonly #upstream: Histogram<'operation' | 'outcome'>;
  readonly #rateLimited: Counter<'limit'>;
  readonly #collectFailures: Counter<'source'>;
  readonly #liveTunnels: Gauge<'status'>;
  readonly #budgetRemaining: Gauge;
  readonly #liveByAudience: Gauge<'audience'>;

  constructor(options: BrokerMetricsOptions) {
    this.#options = {
      cloudflareBudgetRequests: options.cloudflareBudgetRequests,
      liveTunnelsCacheMs: options.liveTunnelsCacheMs ?? DEFAULT_LIVE_TUNNELS_CACHE_MS,
      collectTimeoutMs: options.collectTimeoutMs ?? DEFAULT_COLLECT_TIMEOUT_MS,
      now: options.now ?? Date.now,
    };
    this.#accounts = options.cloudflareAccounts ?? [];
    const registers = [this.registry];
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });

    this.#creates = new Counter({
      name: `${METRIC_PREFIX}tunnel_creates_total`,
      help: 'POST /v1/tunnels answers by outcome: created, replayed (Idempotency-Key), or the error code.',
      labelNames: ['outcome'],
      registers,
    });
    this.#creates.inc({ outcome: 'created' }, 0);

    const heartbeats: Counter<'outcome'> = new Counter({
      name: `${METRIC_PREFIX}heartbeats_total`,
      help: 'Heartbeats answered, by outcome (ok, not_found, unauthorized, forbidden, rejected = other 4xx, unavailable = 503, error = 5xx).',
      labelNames: ['outcome'],
      registers,
      collect: () => {
        heartbeats.reset();
        for (const outcome of HEARTBEAT_OUTCOMES) heartbeats.inc({ outcome }, this.#heartbeatCounts[outcome]);
      },
    });

    this.#reaps = new Counter({
      name: `${METRIC_PREFIX}reaps_total`,
      help: 'Due tunnels the reaper handled, by outcome: ended, retry_scheduled (upstream failed), not_found (already ended), busy (another process holds its lease), lease_lost (taken over mid-teardown), failed (database or Redis).',
      labelNames: ['outcome'],
      registers,
    });
    for (const outcome of REAP_OUTCOMES) this.#reaps.inc({ outcome }, 0);

    this.#reapDelay = new Histogram({
      name: `${METRIC_PREFIX}reap_delay_seconds`,
      help: "Seconds from a due tunnel's deadline (heartbeat expiry, abandoned create's lease, or scheduled retry) to the reaper ending it.",
      buckets: [0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 900],
      registers,
    });

    this.#upstream = new Histogram({
      name: `${METRIC_PREFIX}upstream_call_duration_seconds`,
      help: "Cloudflare API calls (the SDK's own retries and every page of a list included) by operation and outcome: ok, budget_exhausted (not sent), or the failure kind.",
      labelNames: ['operation', 'outcome'],
      buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });

    this.#rateLimited = new Counter({
      name: `${METRIC_PREFIX}rate_limit_rejections_total`,
      help: 'Requests refused by a per-user limit: create_rate, read_rate, delete_rate (CREATE_, READ_, DELETE_RATE_LIMIT_PER_MINUTE) or tunnels_per_user (MAX_TUNNELS_PER_USER).',
      labelNames: ['limit'],
      registers,
    });
    for (const limit of RATE_LIMITS) this.#rateLimited.inc({ limit }, 0);

    this.#collectFailures = new Counter({
      name: `${METRIC_PREFIX}metrics_collect_failures_total`,
      help: 'Scrape-time reads that failed or timed out (their gauges then read NaN), by source.',
      labelNames: ['source'],
      registers,
    });
    for (const source of COLLECT_SOURCES) this.#collectFailures.inc({ source }, 0);

    this.#liveTunnels = new Gauge({
      name: `${METRIC_PREFIX}live_tunnels`,
      help: `Tunnels that are not ended, by status (read from PostgreSQL at most every ${this.#options.liveTunnelsCacheMs} ms; NaN if it did not answer).`,
      labelNames: ['status'],
      registers,
    });

    this.#liveByAudience = new Gauge({
      name: `${METRIC_PREFIX}live_tunnels_by_audience`,
      help: 'Tunnels that are not ended, by who may open their URL: team, public or emails (Cloudflare Access); read with live_tunnels.',
      labelNames: ['audience'],
      registers,
    });

    this.#budgetRemaining = new Gauge({
      name: `${METRIC_PREFIX}cloudflare_budget_remaining`,
      help: 'Cloudflare requests the shared budget still allows in the current sliding window (NaN if Redis did not answer).',
      registers,
    });

    new Gauge({
      name: `${METRIC_PREFIX}cloudflare_budget_requests`,
      help: 'Cloudflare requests allowed per window (CLOUDFLARE_BUDGET_REQUESTS), shared by every instance.',
      registers,
    }).set(options.cloudflareBudgetRequests);

    const capacity = new Gauge({
      name: `${METRIC_PREFIX}cloudflare_account_capacity`,
      help: 'Live tunnels the broker keeps in each Cloudflare account at most (maxTunnels / CLOUDFLARE_MAX_TUNNELS).',
      labelNames: ['account'],
      registers,
    });
    for (const a of this.#accounts) capacity.set({ account: a.name }, a.maxTunnels);
    this.#accountTunnels = new Gauge({
      name: `${METRIC_PREFIX}cloudflare_account_tunnels`,
      help: 'Tunnels that are not ended, per Cloudflare account (NaN if PostgreSQL did not answer).',
      labelNames: ['account'],
      registers,
    });
    this.#accountRemaining = new Gauge({
      name: `${METRIC_PREFIX}cloudflare_account_capacity_remaining`,
      help: 'Tunnels each Cloudflare account can still take: capacity minus live tunnels. Creates answer 503 TUNNEL_CAPACITY_EXHAUSTED once every account is at 0.',
      labelNames: ['account'],
      registers,
    });
    this.#accountBudget = new Gauge({
      name: `${METRIC_PREFIX}cloudflare_account_budget_remaining`,
      help: "Cloudflare requests each account's own request budget still allows in the current sliding window (NaN if Redis did not answer).",
      labelNames: ['account'],
      registers,
    });
  }

  /** Where scrape-time gauges read from; until bound they read NaN. */
  bindSources(sources: MetricsSources): void {
    this.#sources = sources;
    this.#liveCache = undefined;
  }

  /**
   * Prometheus text exposition of this app's registry. The gauges read from PostgreSQL and
   * Redis are refreshed first rather than in prom-client's collect callbacks, which run
   * concurrently with the rest of the exposition: a failed read would only be counted in
   * the scrape after it.
   */
  async scrape(): Promise<string> {
    const [counts, remaining, perAccount, budgets] = await Promise.all([
      this.#liveTunnelCounts(),
      this.#read('cloudflare_budget', (s) => s.cloudflareBudgetRemaining()),
      this.#accounts.length === 0 ? null : this.#read('account_tunnels', (s) => s.accountTunnels?.() ?? Promise.reject(new Error('unbound'))),
      Promise.all(this.#accounts.map((a) => this.#read('cloudflare_budget', (s) => s.accountBudgetRemaining?.(a.accountId) ?? Promise.reject(new Error('unbound'))))),
    ]);
    this.#accounts.forEach((a, i) => {
      const live = perAccount ? (perAccount.get(a.accountId) ?? 0) : Number.NaN;
      this.#accountTunnels.set({ account: a.name }, live);
      this.#accountRemaining.set({ account: a.name }, Math.max(0, a.maxTunnels - live));
      this.#accountBudget.set({ account: a.name }, budgets[i] ?? Number.NaN);
    });
    for (const status of LIVE_STATUSES) this.#liveTunnels.set({ status }, counts ? (counts[status] ?? 0) : Number.NaN);
    for (const audience of AUDIENCES) this.#liveByAudience.set({ audience }, counts?.audience ? (counts.audience[audience] ?? 0) : Number.NaN);
    this.#budgetRemaining.set(remaining ?? Number.NaN);
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  createOutcome(outcome: CreateOutcome): void {
    this.#creates.inc({ outcome });
    if (outcome === 'TUNNEL_LIMIT_EXCEEDED') this.#rateLimited.inc({ limit: 'tunnels_per_user' });
  }

  /** The hot path: a switch and an addition. */
  heartbeat(statusCode: number): void {
    this.#heartbeatCounts[heartbeatOutcome(statusCode)] += 1;
  }

  rateLimited(limit: RateLimitName): void {
    this.#rateLimited.inc({ limit });
  }

  /** Reaper observer: one claimed due tunnel's outcome. */
  reaped(outcome: ReapOutcome, msPastDeadline: number): void {
    this.#reaps.inc({ outcome });
    if (outcome === 'ended') this.#reapDelay.observe(Math.max(0, msPastDeadline) / 1000);
  }

  /** TunnelProvider observer: one upstream call. */
  upstreamCall(operation: string, outcome: string, durationSeconds: number): void {
    this.#upstream.observe({ operation, outcome }, durationSeconds);
  }

  /**
   * One GROUP BY per cache period, however many scrapes (or scrapers) ask: concurrent
   * scrapes share the query in flight, and a failure is cached too so a PostgreSQL
   * outage is not hit harder by its monitoring.
   */
  #liveTunnelCounts(): Promise<LiveCounts | null> {
    const now = this.#options.now();
    if (this.#liveCache && now - this.#liveCache.at < this.#options.liveTunnelsCacheMs) return this.#liveCache.counts;
    const counts = this.#read('live_tunnels', (s) => s.liveTunnels());
    this.#liveCache = { at: now, counts };
    return counts;
  }

  async #read<T>(source: CollectSource, read: (sources: MetricsSources) => Promise<T>): Promise<T | null> {
    const sources = this.#sources;
    if (!sources) return null;
    try {
      return await withTimeout(read(sources), this.#options.collectTimeoutMs);
    } catch {
      this.#collectFailures.inc({ source });
      return null;
    }
  }
}

function heartbeatOutcome(statusCode: number): HeartbeatOutcome {
  switch (statusCode) {
    case 200:
      return 'ok';
    case 404:
      return 'not_found';
    case 401:
      return 'unauthorized';
    case 403:
      return 'forbidden';
    case 503:
      return 'unavailable';
    default:
      return statusCode < 500 ? 'rejected' : 'error';
  }
}

function zeroes<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((key) => [key, 0])) as Record<K, number>;
}
