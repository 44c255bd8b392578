/**
 * Calls `tick` every `intervalMs`, counting from when the previous call settled, so calls
 * never overlap however long one takes. `start()` and `stop()` are idempotent and say
 * whether they changed anything; waiting for a call in progress is the owner's business.
 */
export class PeriodicTimer {
  readonly #intervalMs: number;
  readonly #tick: () => Promise<unknown>;
  readonly #onError: (error: unknown) => void;
  #timer: NodeJS.Timeout | undefined;
  #started = false;

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

  #schedule(): void {
    if (!this.#started) return;
    this.#timer = setTimeout(() => {
      this.#tick()
        .catch(this.#onError)
        .finally(() => this.#schedule());
    }, this.#intervalMs);
  }
}
