import { PeriodicTimer } from '../lifecycle/periodic-timer.js';
import { mapWithConcurrency } from '../util/map-with-concurrency.js';
import { LogEvent, type Logger } from '../logging/logger.js';
import type { HeartbeatStore } from '../tunnels/heartbeat-store.js';
import type { EndOutcome, TunnelService } from '../tunnels/tunnel-service.js';

export const DEFAULT_REAPER_INTERVAL_MS = 5_000;
/** Due tunnels leased from Redis per round trip. */
export const DEFAULT_REAPER_BATCH_SIZE = 100;
/** Tunnels ended in parallel: bounded so a mass expiry cannot burst Cloudflare's rate limit. */
export const DEFAULT_REAPER_CONCURRENCY = 8;
/** A sweep stops after this many batches and lets the next sweep continue. */
export const DEFAULT_REAPER_MAX_BATCHES = 20;

export interface ReaperOptions {
  service: TunnelService;
  heartbeats: HeartbeatStore;
  logger: Logger;
  intervalMs?: number;
  batchSize?: number;
  concurrency?: number;
  maxBatchesPerSweep?: number;
  /** Told the outcome of every claimed tunnel (metrics). */
  observer?: ReaperObserver;
}

export interface ReaperObserver {
  /** `msPastDeadline`: from the deadline it was due at to the end of its handling. */
  reaped(outcome: EndOutcome | 'failed', msPastDeadline: number): void;
}

export interface SweepResult {
  /** Set when the sweep did not run: Redis's heartbeat state was missing and is being rebuilt. */
  skipped?: 'heartbeat_state_rebuilt' | 'heartbeat_state_rebuilding';
  /** Rows a crash left creating/ending with a lapsed lease and no check-back, made due again. */
  recovered: number;
  claimed: number;
  ended: number;
  retryScheduled: number;
  notFound: number;
  /** Held by another process's lease: it comes due again when that lease would lapse. */
  busy: number;
  /** This reaper's lease was taken over mid-teardown; the new holder finishes. */
  leaseLost: number;
  failed: number;
  durationMs: number;
}

/**
 * Ends tunnels whose heartbeat deadline passed, abandoned creates and ends that
 * failed upstream earlier.
 *
 * Contracts:
 * - `start()` and `stop()` are idempotent; `stop()` waits for the running sweep.
 * - Sweeps never overlap within a process. Across processes, a claim in Redis leases a
 *   batch of due tunnels to one reaper for a short lease that it renews while it works
 *   through the batch; each tunnel is then taken over in PostgreSQL (its own lease, a new
 *   generation), which decides: exactly one process tears a tunnel down.
 * - A sweep's cost is proportional to the number of due tunnels (plus one script call per
 *   heartbeat bucket), never to the number of healthy ones: it only reads the due end of
 *   each bucket's sorted set.
 * - An upstream failure reschedules the tunnel; nothing due is forgotten.
 */
export class Reaper {
  readonly #service: TunnelService;
  readonly #heartbeats: HeartbeatStore;
  readonly #log: Logger;
  readonly #intervalMs: number;
  readonly #batchSize: number;
  readonly #concurrency: number;
  readonly #maxBatches: number;
  readonly #observer: ReaperObserver | undefined;
  readonly #timer: PeriodicTimer;
  #running: Promise<SweepResult> | undefined;
  #stopping = false;

  constructor(options: ReaperOptions) {
    this.#service = options.service;
    this.#heartbeats = options.heartbeats;
    this.#log = options.logger;
    this.#intervalMs = options.intervalMs ?? DEFAULT_REAPER_INTERVAL_MS;
    this.#batchSize = options.batchSize ?? DEFAULT_REAPER_BATCH_SIZE;
    this.#concurrency = options.concurrency ?? DEFAULT_REAPER_CONCURRENCY;
    this.#maxBatches = options.maxBatchesPerSweep ?? DEFAULT_REAPER_MAX_BATCHES;
    this.#observer = options.observer;
    this.#timer = new PeriodicTimer({
      intervalMs: this.#intervalMs,
      tick: () => this.sweep(),
      onError: (error) => this.#log.error({ err: error, event: LogEvent.reaperSweepFailed }, 'reaper sweep failed'),
    });
  }

  get started(): boolean {
    return this.#timer.started;
  }

  start(): void {
    if (!this.#timer.start()) return;
    this.#stopping = false;
    this.#log.info({ intervalMs: this.#intervalMs }, 'reaper started');
  }

  async stop(): Promise<void> {
    if (!this.#timer.stop()) return;
    this.#stopping = true;
    await this.#running?.catch(() => {});
    this.#log.info('reaper stopped');
  }

  /** One sweep now. If one is already running, returns that one instead of starting another. */
  sweep(): Promise<SweepResult> {
    this.#running ??= this.#sweep().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  async #sweep(): Promise<SweepResult> {
    const started = performance.now();
    const result: SweepResult = { recovered: 0, claimed: 0, ended: 0, retryScheduled: 0, notFound: 0, busy: 0, leaseLost: 0, failed: 0, durationMs: 0 };
    // If Redis came back empty, rebuild its state first and reap nothing this time: every
    // live tunnel has just been given a full TTL, so nothing can be due.
    const state = await this.#service.restoreHeartbeatState();
    if (state !== 'intact') {
      result.skipped = state === 'rebuilt' ? 'heartbeat_state_rebuilt' : 'heartbeat_state_rebuilding';
      return this.#finish(result, started);
    }
    result.recovered = await this.#service.recoverAbandoned();
    for (let batch = 0; batch < this.#maxBatches; batch++) {
      // Buckets whose state was lost since the check above claim nothing; the next sweep rebuilds them.
      const { claims } = await this.#heartbeats.claimDue(this.#batchSize, this.#service.leaseMs);
      if (claims.length === 0) break;
      result.claimed += claims.length;
      // Lateness = how late it was when claimed (Redis's clock) + how long handling it took (ours).
      const claimedAt = performance.now();
      // The claims not yet taken over are renewed until they are (a batch may outlive one lease).
      const waiting = new Set(claims.map((c) => c.id));
      const keepalive = new PeriodicTimer({
        intervalMs: Math.max(1, Math.floor(this.#service.leaseMs / 3)),
        tick: () => this.#heartbeats.extendClaims([...waiting], this.#service.leaseMs),
        onError: (error) => this.#log.warn({ err: error }, 'renewing the reaper batch claims failed; retrying'),
      });
      keepalive.start();
      await mapWithConcurrency(claims, this.#concurrency, async ({ id, msPastDeadline }) => {
        waiting.delete(id);
        let outcome: EndOutcome | 'failed';
        try {
          outcome = await this.#service.endDue(id, this.#log);
        } catch (error) {
          // A database or Redis failure: the lease expires and a later sweep tries again.
          this.#log.error({ err: error, tunnelId: id, event: LogEvent.tunnelEndFailed }, 'ending a due tunnel failed');
          outcome = 'failed';
        }
        if (outcome === 'ended') result.ended++;
        else if (outcome === 'retry_scheduled') result.retryScheduled++;
        else if (outcome === 'not_found') result.notFound++;
        else if (outcome === 'busy') result.busy++;
        else if (outcome === 'lease_lost') result.leaseLost++;
        else result.failed++;
        this.#observer?.reaped(outcome, msPastDeadline + (performance.now() - claimedAt));
      });
      keepalive.stop();
      await keepalive.settled();
      if (claims.length < this.#batchSize || this.#stopping) break;
    }
    return this.#finish(result, started);
  }

  #finish(result: SweepResult, started: number): SweepResult {
    result.durationMs = Math.round(performance.now() - started);
    if (result.claimed > 0 || result.recovered > 0 || result.skipped) this.#log.info({ event: LogEvent.reaperSweep, ...result }, 'reaper sweep');
    return result;
  }
}
