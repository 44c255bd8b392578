import type { HeartbeatAttempt, KnownTunnel, Model } from './model.js';
import type { ApiResult } from './world.js';

export interface HeartbeatLoopOptions {
  model: Model;
  /** Sends one heartbeat for the tunnel through that broker slot. */
  send: (tunnel: KnownTunnel, slot: number) => Promise<ApiResult>;
  intervalMs: number;
  /** The loop stops by itself after this many ticks (a bound, not the normal way out). */
  maxTicks: number;
  brokers: number;
}

/**
 * The agents: every `intervalMs`, one heartbeat per tunnel the model is heartbeating,
 * through the brokers in turn. A heartbeat that gets no answer (broker killed, or too
 * slow) is sent once more through the other broker at once. At most one heartbeat per
 * tunnel is in flight, so a slow broker delays that tunnel only.
 */
export class HeartbeatLoop {
  readonly #o: HeartbeatLoopOptions;
  readonly #inFlight = new Set<string>();
  readonly #pending = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | undefined;
  #ticks = 0;
  #stopped = false;

  constructor(options: HeartbeatLoopOptions) {
    this.#o = options;
  }

  start(): void {
    this.#schedule(0);
  }

  /** Stops ticking and waits for the heartbeats in flight. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await Promise.allSettled([...this.#pending]);
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => this.#tick(), delayMs);
  }

  #tick(): void {
    if (this.#stopped || this.#ticks >= this.#o.maxTicks) return;
    const tick = this.#ticks++;
    this.#o.model.beating().forEach((tunnel, i) => {
      if (this.#inFlight.has(tunnel.id)) return;
      this.#inFlight.add(tunnel.id);
      const p = this.#beat(tunnel, (tick + i) % this.#o.brokers).finally(() => {
        this.#inFlight.delete(tunnel.id);
        this.#pending.delete(p);
      });
      this.#pending.add(p);
    });
    this.#schedule(this.#o.intervalMs);
  }

  async #beat(tunnel: KnownTunnel, slot: number): Promise<void> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const sentAt = Date.now();
      const res = await this.#o.send(tunnel, (slot + attempt) % this.#o.brokers);
      const record: HeartbeatAttempt = { sentAt, doneAt: Date.now(), broker: res.broker, status: res.status };
      if (res.error) record.error = res.error;
      if (res.status === 200 && typeof res.body?.expiresAt === 'string') record.expiresAt = Date.parse(res.body.expiresAt);
      // Only while it is still heartbeated: a DELETE or a silence may have come meanwhile.
      if (tunnel.heartbeat === 'on' || res.status === 200) this.#o.model.recordAttempt(tunnel, record);
      if (res.status !== 0) return;
    }
  }
}
