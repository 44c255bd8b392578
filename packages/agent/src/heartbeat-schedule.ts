import { jittered } from './backoff.js';
import { type MonotonicClock, monotonicNow } from './clock.js';

/**
 * When the next heartbeat is due: a fixed rate from send to send (a slow answer must not push
 * every later heartbeat back), measured on the monotonic clock, so a wall-clock step after a
 * sleep neither delays the next heartbeat nor fires it early.
 */
export class HeartbeatSchedule {
  readonly #now: MonotonicClock;
  #lastSentAt: number;

  /** Starts counting at construction: the create that made the tunnel started its TTL. */
  constructor(now: MonotonicClock = monotonicNow) {
    this.#now = now;
    this.#lastSentAt = now();
  }

  /** A heartbeat (or a create, which starts a new TTL) is being sent now. */
  markSent(): void {
    this.#lastSentAt = this.#now();
  }

  /** Milliseconds since the last send. */
  sinceLastSent(): number {
    return this.#now() - this.#lastSentAt;
  }

  /** How long to wait before the next send: the period with ±10 % jitter, less the time already gone since the last one. */
  delayUntilNext(periodMs: number, random: () => number = Math.random): number {
    return Math.max(0, jittered(periodMs, random) - this.sinceLastSent());
  }
}
