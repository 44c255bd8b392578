import type { PrismaClient } from '../../src/generated/prisma/client.js';
import type { CloudflareEmulator } from '../../src/cloudflare/emulator/emulator.js';
import { deleteKeysUnderPrefix } from '../helpers/redis-keys.js';
import type { BrokerProcess } from '../helpers/broker-process.js';
import { startCluster, type Cluster } from '../helpers/cluster.js';

/**
 * What the model runs against: two real broker processes (API + reaper + reconciler each)
 * on one PostgreSQL database, one Redis key prefix and one in-process Cloudflare emulator,
 * with the short timings that make a sequence take seconds. Lives for a whole test file
 * (or soak run); each sequence is an Execution on top of it.
 */

export const BROKER_COUNT = 2;
export const TTL_SECONDS = 3;
export const MAX_TUNNELS_PER_USER = 3;

/**
 * CLOUDFLARE_MAX_RETRIES=1 keeps the SDK's retries and the create adoption (409/1013,
 * 81053) in play. Leases keep their default (TUNNEL_LEASE_SECONDS, 5 s, renewed by their
 * holder), so a broker killed mid-create or mid-delete is taken over within a sequence's wait
 * for quiescence. The one-second budget window keeps budget waits short.
 */
export const MODEL_ENV: Readonly<Record<string, string>> = {
  TUNNEL_TTL_SECONDS: String(TTL_SECONDS),
  HEARTBEAT_INTERVAL_SECONDS: '1',
  REAPER_INTERVAL_SECONDS: '1',
  CLOUDFLARE_TIMEOUT_MS: '1500',
  CLOUDFLARE_MAX_RETRIES: '1',
  CLOUDFLARE_BUDGET_WINDOW_SECONDS: '1',
  RECONCILE_INTERVAL_SECONDS: '2',
  RECONCILE_GRACE_SECONDS: '1',
  MAX_TUNNELS_PER_USER: String(MAX_TUNNELS_PER_USER),
  // The per-user rate limits are not under test (test/tunnels/rate-limit covers them), and the
  // model and its invariant probes send far more than a person would.
  CREATE_RATE_LIMIT_PER_MINUTE: '100000',
  READ_RATE_LIMIT_PER_MINUTE: '100000',
  DELETE_RATE_LIMIT_PER_MINUTE: '100000',
  // The heartbeat loop sends one a second per tunnel: at the default bound's very edge.
  HEARTBEAT_MAX_PER_MINUTE: '100000',
  // Cloudflare Access (issue 12): a team rule, so creates gate by the wildcard team application
  // (port 0) or make their own application and policy (port 1 asks for an emails audience).
  ACCESS_TEAM_EMAIL_DOMAINS: 'team.example',
};

export interface WorldOptions {
  /** The brokers' LOG_LEVEL (default info: spawnBroker waits for the info line that says it is ready). */
  logLevel?: string;
  /** Overrides of MODEL_ENV. */
  env?: Record<string, string>;
}

/** An answer from a broker, or why there was none (status 0). */
export interface ApiResult {
  status: number;
  /** The error envelope's code, when there is one. */
  code?: string;
  body?: any;
  headers?: Headers;
  error?: 'timeout' | 'network';
  /** The broker slot that was asked. */
  broker: number;
}

export interface ApiRequest {
  userId?: string;
  body?: unknown;
  headers?: Record<string, string>;
  timeoutMs: number;
}

interface Slot {
  broker: BrokerProcess | undefined;
  restarting: Promise<void> | undefined;
}

export class World {
  readonly #cluster: Cluster;
  readonly #slots: Slot[];
  #sequences = 0;

  private constructor(cluster: Cluster, slots: Slot[]) {
    this.#cluster = cluster;
    this.#slots = slots;
  }

  static async start(options: WorldOptions = {}): Promise<World> {
    const env = { ...MODEL_ENV, LOG_LEVEL: options.logLevel ?? 'info', ...options.env };
    // The in-process broker of the cluster only reads (database, Redis); the two processes do the work.
    const cluster = await startCluster(env, { survivorReaper: false });
    try {
      // One at a time: a broker's start-up is CPU-bound, and two at once on a busy machine take each other past spawnBroker's wait.
      const slots: Slot[] = [];
      for (let i = 0; i < BROKER_COUNT; i++) slots.push({ broker: await cluster.spawn(`b${i}`), restarting: undefined });
      return new World(cluster, slots);
    } catch (error) {
      await cluster.close();
      throw error;
    }
  }

  get emulator(): CloudflareEmulator {
    return this.#cluster.emulator;
  }

  get prisma(): PrismaClient {
    return this.#cluster.survivor.app.prisma;
  }

  get domain(): string {
    return this.#cluster.survivor.config.tunnels.domain;
  }

  /** Numbers the sequences run on this world, which name their users and slugs: never the same twice. */
  nextSequence(): number {
    return this.#sequences++;
  }

  isUp(slot: number): boolean {
    return this.#slots[slot]!.broker !== undefined;
  }

  /** The slot asked for if its broker is up, else the other one (one is always up). */
  route(slot: number): number {
    if (this.isUp(slot)) return slot;
    const other = (slot + 1) % BROKER_COUNT;
    return this.isUp(other) ? other : slot;
  }

  /** One request; never throws: a refused connection or a timeout is status 0. */
  async api(slot: number, method: string, path: string, request: ApiRequest): Promise<ApiResult> {
    const target = this.route(slot);
    const broker = this.#slots[target]!.broker;
    if (!broker) return { status: 0, error: 'network', broker: target };
    try {
      const res = await broker.request(method, path, request);
      const code = typeof res.body?.code === 'string' ? (res.body.code as string) : undefined;
      return { status: res.status, code, body: res.body, headers: res.headers, broker: target };
    } catch (error) {
      const timeout = error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError');
      return { status: 0, error: timeout ? 'timeout' : 'network', broker: target };
    }
  }

  /**
   * SIGKILL one broker (after making sure the other is up) and restart it `downMs` later, in
   * the background; returns once it is dead, with the restart's promise.
   */
  async kill(slot: number, downMs: number): Promise<{ restarted: Promise<void> }> {
    await this.allUp();
    const s = this.#slots[slot]!;
    const broker = s.broker!;
    s.broker = undefined;
    await broker.kill9();
    const restarted = (async () => {
      await new Promise((r) => setTimeout(r, downMs));
      // A second try when the machine was too busy for spawnBroker's start-up wait (it kills the late one).
      for (let attempt = 1; ; attempt++) {
        try {
          s.broker = await this.#cluster.spawn(`b${slot}`);
          return;
        } catch (error) {
          if (attempt >= 2) throw error;
        }
      }
    })().finally(() => {
      s.restarting = undefined;
    });
    s.restarting = restarted;
    return { restarted };
  }

  /** Waits for every pending restart (each bounded by spawnBroker's 30 s start-up wait). */
  async allUp(): Promise<void> {
    for (const s of this.#slots) await s.restarting;
    for (let i = 0; i < BROKER_COUNT; i++) {
      if (!this.isUp(i)) throw new Error(`broker b${i} is down and not restarting`);
    }
  }

  /** Every key under the brokers' prefix, gone (SCAN + UNLINK: Redis is shared with other test files). */
  flushRedis(): Promise<void> {
    return deleteKeysUnderPrefix(this.#cluster.survivor.redis, this.#cluster.prefix).then(() => undefined);
  }

  /** Whether a reconcile pass holds its lock (src/reconcile/reconciler.ts) right now. */
  async reconcilePassRunning(): Promise<boolean> {
    return (await this.#cluster.survivor.redis.exists('reconcile:lock')) === 1;
  }

  /** What each broker process printed (the current ones, not those killed). */
  brokerOutput(): string[] {
    return this.#slots.map((s, i) => `--- b${i} ---\n${s.broker?.proc.output() ?? '(down)'}`);
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.#slots.map((s) => s.restarting));
    await this.#cluster.close();
  }
}
