/** Exponential backoff with "full jitter" on the upper half, so many agents that lost the broker at once do not return in lockstep. */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * The heartbeat period with ±10 % jitter: agents started together (a team's laptops waking
 * at 9:00) spread out, and never drift later than 10 % past the period, well inside the TTL.
 */
export function jittered(periodMs: number, random: () => number = Math.random): number {
  return Math.round(periodMs * (0.9 + random() * 0.2));
}

/** At most this much is added to a server's Retry-After, so agents told the same second do not all return in it. */
const RETRY_AFTER_JITTER_MS = 250;

/**
 * A wait that honours a server's Retry-After: never shorter than it, nor than `floorMs` (a
 * growing backoff of the caller's), plus up to 250 ms of jitter.
 */
export function retryAfterDelay(retryAfterSec: number | undefined, floorMs = 0, random: () => number = Math.random): number {
  return Math.ceil(Math.max((retryAfterSec ?? 0) * 1000, floorMs) + random() * RETRY_AFTER_JITTER_MS);
}

/** Resolves after `ms`, or as soon as the signal aborts (never rejects: callers check the signal). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, Math.max(0, ms));
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * A sleep that can be cut short from outside (`wake()`), e.g. to check the tunnel at once
 * when cloudflared exits instead of waiting for the next heartbeat.
 */
export class Waker {
  #wake: (() => void) | undefined;
  #pending = false;

  async sleep(ms: number, signal: AbortSignal): Promise<void> {
    if (this.#pending) {
      this.#pending = false;
      return;
    }
    const woken = new AbortController();
    this.#wake = () => woken.abort();
    try {
      await sleep(ms, AbortSignal.any([signal, woken.signal]));
    } finally {
      this.#wake = undefined;
      this.#pending = false;
    }
  }

  wake(): void {
    if (this.#wake) this.#wake();
    else this.#pending = true;
  }
}
