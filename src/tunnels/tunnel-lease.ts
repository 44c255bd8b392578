import { PeriodicTimer } from '../lifecycle/periodic-timer.js';
import type { Logger } from '../logging/logger.js';
import type { HeartbeatStore } from './heartbeat-store.js';
import type { TunnelRows } from './tunnel-rows.js';

/**
 * The Redis check-back of a leased tunnel comes this long after its lease would lapse, so
 * that when the reaper looks, the lease in PostgreSQL has lapsed too (Redis's and
 * PostgreSQL's clocks may differ a little).
 */
export const CHECK_BACK_SLACK_MS = 1_000;

/** The holder's lease lapsed or was taken over: it must stop, and can no longer write. */
export class LeaseLostError extends Error {
  constructor() {
    super('The lease on this tunnel was lost to another process.');
    this.name = 'LeaseLostError';
  }
}

export interface TunnelLeaseDeps {
  rows: TunnelRows;
  heartbeats: HeartbeatStore;
  leaseMs: number;
  logger: Logger;
}

/**
 * A lease held on one tunnel row while its create or its teardown runs, in the manner of
 * etcd's lease keepalive: short, and renewed by its holder every third of its length.
 *
 * - PostgreSQL is the authority: `lease_expires_at` (database clock) and the generation,
 *   on which every write of the holder is conditional (fencing).
 * - Redis holds the reaper's check-back time: if the holder dies, the tunnel comes due
 *   shortly after the lease lapses, and another broker takes the work over then.
 * - Locally, the holder stops trusting its lease once a full lease has passed since the
 *   last renewal it sent that succeeded (a monotonic clock), even before the database says
 *   so: `assertHeld()` before each upstream step.
 *
 * `start()` and `stop()` are idempotent; `stop()` waits for a renewal in flight, so nothing
 * the lease writes can land after the holder's next step.
 */
export class TunnelLease {
  readonly id: string;
  readonly generation: number;
  readonly #deps: TunnelLeaseDeps;
  readonly #timer: PeriodicTimer;
  #validUntil: number;
  #lost = false;
  #deleteRequested = false;

  /** `acquiredAt`: performance.now() from before the statement that granted the lease was sent. */
  constructor(deps: TunnelLeaseDeps, id: string, generation: number, acquiredAt: number) {
    this.#deps = deps;
    this.id = id;
    this.generation = generation;
    this.#validUntil = acquiredAt + deps.leaseMs;
    this.#timer = new PeriodicTimer({
      intervalMs: Math.max(1, Math.floor(deps.leaseMs / 3)),
      tick: () => this.#renew(),
      onError: (error) => deps.logger.warn({ err: error, tunnelId: id }, 'renewing a tunnel lease failed; retrying'),
    });
  }

  /** Starts renewing; returns this. */
  start(): this {
    this.#timer.start();
    return this;
  }

  async stop(): Promise<void> {
    this.#timer.stop();
    await this.#timer.settled();
  }

  /** The lease was taken over, or could not be renewed within its length. */
  get lost(): boolean {
    return this.#lost || performance.now() >= this.#validUntil;
  }

  /** A DELETE was recorded while the tunnel was being created (learned at a renewal). */
  get deleteRequested(): boolean {
    return this.#deleteRequested;
  }

  assertHeld(): void {
    if (this.lost) throw new LeaseLostError();
  }

  /** Pushes the Redis check-back past the lease (also refuses heartbeats: it drops the heartbeat key). */
  async scheduleCheckBack(): Promise<void> {
    await this.#deps.heartbeats.scheduleEnd(this.id, this.#deps.leaseMs + CHECK_BACK_SLACK_MS);
  }

  async #renew(): Promise<void> {
    if (this.#lost) return;
    const sentAt = performance.now();
    const result = await this.#deps.rows.renewLease(this.id, this.generation, this.#deps.leaseMs);
    if (!result.held) {
      this.#lost = true;
      this.#timer.stop();
      return;
    }
    this.#validUntil = sentAt + this.#deps.leaseMs;
    this.#deleteRequested = result.deleteRequested;
    await this.scheduleCheckBack();
  }
}
