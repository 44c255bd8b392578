/**
 * Calls `tick` every `intervalMs`, counting from when the previous call settled, so calls
 * never overlap however long one takes. `start()` and `stop()` are idempotent and say
 * whether they changed anything; `settled()` waits for a call in progress, for owners
 * whose next step must not overlap the last tick (a lease holder's final write).
 */
export class PeriodicTimer {
  readonly #intervalMs: number;
  readonly #tick: () => Promise<unknown>;
  readonly #onError: (error: unknown) => void;
  #timer: NodeJS.Timeout | undefined;
  #started = false;
  #inFlight: Promise<unknown> | undefined;

  constructor(options: { intervalMs: number; tick: () => Promise<unknown>; onError: (error: unknown) => void }) {
    this.#intervalMs = options.intervalMs;
    this.#tick = options.tick;
    this.#onError = options.onError;
  }

  get started(): boolean {
    return this.#started;
  }

  start(): boolean {
    if (this.#started) return false;
    this.#started = true;
    this.#schedule();
    return true;
  }

  stop(): boolean {
    if (!this.#started) return false;
    this.#started = false;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    return true;
  }

  /** Resolves once no call is in progress. */
  async settled(): Promise<void> {
    await this.#inFlight;
  }

  #schedule(): void {
    if (!this.#started) return;
    this.#timer = setTimeout(() => {
      this.#inFlight = this.#tick()
        .catch(this.#onError)
        .finally(() => {
          this.#inFlight = undefined;
          this.#schedule();
        });
    }, this.#intervalMs);
  }
}
