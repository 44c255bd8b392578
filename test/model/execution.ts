import type { FaultRule } from '../../src/cloudflare/emulator/emulator.js';
import { HeartbeatLoop } from './heartbeat-loop.js';
import { type KnownTunnel, Model, type Op } from './model.js';
import { type ApiRequest, type ApiResult, BROKER_COUNT, type World } from './world.js';

export const USERS = 3;
export const SLUG_POOL = 4;
export const IDEMPOTENCY_KEYS = 2;
const HEARTBEAT_INTERVAL_MS = 1000;
/** A create or delete under faults takes seconds (timeouts, retries, backoff); past this the client gives up. */
export const API_TIMEOUT_MS = 20_000;
const HEARTBEAT_TIMEOUT_MS = 1500;
/** Bound on each cleanup wait between sequences. */
const CLEANUP_TIMEOUT_MS = 30_000;

/**
 * One sequence of commands on the World: the `real` of fc.asyncModelRun. Names its own
 * users and slugs (so nothing of an earlier sequence can collide with it), runs the
 * heartbeat loop, sends every request through `api` (which records it in the model),
 * and owns the faults and background work the commands start, so that `settle` can stop
 * all of it.
 */
export class Execution {
  readonly model: Model;
  readonly #loop: HeartbeatLoop;
  readonly #pending = new Set<Promise<unknown>>();
  readonly #faultTimers = new Set<NodeJS.Timeout>();
  /** Notes from the cleanup before this sequence (rows an earlier one left behind). */
  readonly preamble: string[];

  private constructor(
    readonly world: World,
    readonly index: number,
    preamble: string[],
    maxTicks: number,
  ) {
    const tag = `e${index}`;
    this.model = new Model(
      Array.from({ length: USERS }, (_, i) => `model-${tag}-u${i}`),
      Array.from({ length: SLUG_POOL }, (_, i) => `${tag}-s${i}`),
    );
    this.preamble = preamble;
    this.#loop = new HeartbeatLoop({
      model: this.model,
      brokers: BROKER_COUNT,
      intervalMs: HEARTBEAT_INTERVAL_MS,
      maxTicks,
      send: (t, slot) => this.heartbeat(t, slot),
    });
  }

  /**
   * Makes the world clean for a new sequence: both brokers up, no faults, every tunnel of an
   * earlier sequence ended (rows a bug left stuck are forced to ended, and said so), and the
   * emulator emptied, so upstream and its request log hold only what this sequence does.
   */
  static async begin(world: World, index: number, options: { maxSeconds: number }): Promise<Execution> {
    await world.allUp();
    world.emulator.clearFaults();
    const preamble = await cleanUp(world);
    world.emulator.reset();
    const exec = new Execution(world, index, preamble, options.maxSeconds);
    exec.#loop.start();
    return exec;
  }

  get probeUserId(): string {
    return `model-e${this.index}-probe`;
  }

  keyName(k: number): string {
    return `key-${k}`;
  }

  /** Sends a request through a broker slot and records its outcome. */
  async api(op: Op, slot: number, method: string, path: string, request: Partial<ApiRequest> & { tunnelId?: string } = {}): Promise<ApiResult> {
    const { tunnelId, ...rest } = request;
    const res = await this.world.api(slot, method, path, { timeoutMs: API_TIMEOUT_MS, ...rest });
    this.model.record({
      at: Date.now(), op, broker: res.broker, method, path, status: res.status,
      ...(request.userId ? { userId: request.userId } : {}),
      ...(tunnelId ? { tunnelId } : {}),
      ...(res.code ? { code: res.code } : {}),
      ...(res.error ? { error: res.error } : {}),
    });
    return res;
  }

  heartbeat(t: KnownTunnel, slot: number): Promise<ApiResult> {
    const auth = t.heartbeatToken ? { headers: { authorization: `Bearer ${t.heartbeatToken}` } } : { userId: t.userId };
    return this.api('heartbeat', slot, 'POST', `/v1/tunnels/${t.id}/heartbeat`, { ...auth, tunnelId: t.id, timeoutMs: HEARTBEAT_TIMEOUT_MS });
  }

  /** Background work a command started and does not wait for; settle() waits for all of it. */
  track(p: Promise<unknown>, what: string): void {
    const tracked: Promise<void> = p.then(
      () => {},
      (error: unknown) => this.model.note(`${what} failed: ${String(error)}`),
    ).finally(() => this.#pending.delete(tracked));
    this.#pending.add(tracked);
  }

  mark(kind: 'kill' | 'restart' | 'flush' | 'fault' | 'fault.cleared', detail: string): void {
    this.model.events.push({ at: Date.now(), kind, detail, requestIndex: this.world.emulator.requests.length });
    this.model.note(`[${kind}] ${detail}`);
  }

  /** Injects a Cloudflare fault and clears it after `durationMs`. */
  injectFault(rule: FaultRule, durationMs: number): void {
    const remove = this.world.emulator.injectFault(rule);
    this.model.counts.faults++;
    this.mark('fault', `${describeRule(rule)} for ${durationMs} ms`);
    const timer = setTimeout(() => {
      this.#faultTimers.delete(timer);
      remove();
      this.mark('fault.cleared', describeRule(rule));
    }, durationMs);
    this.#faultTimers.add(timer);
  }

  /**
   * The end of the sequence: faults cleared, brokers up, background requests answered. The
   * heartbeat loop keeps going, so the tunnels it heartbeats must survive what follows.
   */
  async settle(): Promise<void> {
    for (const t of this.#faultTimers) clearTimeout(t);
    this.#faultTimers.clear();
    this.world.emulator.clearFaults();
    await this.world.allUp();
    // Each is bounded by API_TIMEOUT_MS.
    await Promise.allSettled([...this.#pending]);
  }

  /** Stops the agents and ends every tunnel, so the next sequence starts from nothing. */
  async end(): Promise<void> {
    for (const t of this.#faultTimers) clearTimeout(t);
    this.#faultTimers.clear();
    this.world.emulator.clearFaults();
    await this.#loop.stop();
    await Promise.allSettled([...this.#pending]);
  }
}

function describeRule(rule: FaultRule): string {
  const extra = [
    rule.status !== undefined ? `status=${rule.status}` : '',
    rule.retryAfterSec !== undefined ? `retryAfter=${rule.retryAfterSec}s` : '',
    rule.latencyMs !== undefined ? `latency=${rule.latencyMs}ms` : '',
    rule.lostAs !== undefined ? `as=${rule.lostAs}` : '',
    rule.times !== undefined ? `times=${rule.times}` : '',
    rule.probability !== undefined ? `p=${rule.probability}` : '',
  ].filter(Boolean).join(' ');
  return `${rule.kind} on ${rule.endpoint ?? 'every endpoint'}${extra ? ` (${extra})` : ''}`;
}

/**
 * Ends every tunnel left by an earlier sequence, through the API as its owner. Rows still
 * not ended after the deadline (a stuck lease) are forced to ended in the database, so that
 * they cannot leak into this sequence's invariants; the notes say which.
 */
async function cleanUp(world: World): Promise<string[]> {
  const notes: string[] = [];
  const deadline = Date.now() + CLEANUP_TIMEOUT_MS;
  for (let round = 0; round < 100 && Date.now() < deadline; round++) {
    const live = await world.prisma.tunnel.findMany({ where: { status: { not: 'ended' } }, select: { id: true, ownerId: true, status: true } });
    if (live.length === 0) return notes;
    // `ending` ones too: a DELETE finishes an end whose broker was killed, instead of waiting out its lease.
    await Promise.allSettled(live.map((r, i) =>
      world.api(i % BROKER_COUNT, 'DELETE', `/v1/tunnels/${r.id}`, { userId: r.ownerId, timeoutMs: API_TIMEOUT_MS })));
    await new Promise((r) => setTimeout(r, 250));
  }
  const stuck = await world.prisma.tunnel.findMany({ where: { status: { not: 'ended' } }, select: { id: true, slug: true, status: true, updatedAt: true } });
  if (stuck.length > 0) {
    notes.push(`cleanup: ${stuck.length} row(s) of an earlier sequence still not ended after ${CLEANUP_TIMEOUT_MS / 1000} s, forced to ended: ${stuck.map((r) => `${r.id} ${r.slug} ${r.status}`).join(', ')}`);
    await world.prisma.tunnel.updateMany({ where: { id: { in: stuck.map((r) => r.id) }, status: { not: 'ended' } }, data: { status: 'ended', endedAt: new Date() } });
  }
  return notes;
}
