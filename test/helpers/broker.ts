import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { afterAll, beforeAll } from 'vitest';
import { buildApp, type BuildAppOptions } from '../../src/app.js';
import { signAccessToken } from '../../src/auth/access-token.js';
import { startCloudflareEmulator, type CloudflareEmulator } from '../../src/cloudflare/emulator/emulator.js';
import { type Config, loadConfig } from '../../src/config/env.js';
import { loggerOptions } from '../../src/logging/logger.js';
import { createRedisClient } from '../../src/plugins/redis.js';
import { createTestDatabase, type TestDatabase } from './database.js';
import type { RedisClient } from '../../src/redis/redis-client.js';
import { heartbeatKeysOf } from '../../src/tunnels/heartbeat-keys.js';
import { deleteKeysUnderPrefix, redisEnv, type RedisTopology, testKeyPrefix } from './redis-keys.js';

export const TEST_JWT_SECRET = 'test-secret-that-is-at-least-32-characters-long';
export const TEST_DOMAIN = 'tunnels.test';

/** Every log line the app wrote, parsed, plus the raw text (for redaction checks). */
export class LogCapture extends Writable {
  readonly lines: Array<Record<string, unknown>> = [];
  raw = '';

  override _write(chunk: Buffer, _encoding: string, callback: () => void): void {
    const text = chunk.toString('utf8');
    this.raw += text;
    for (const line of text.split('\n')) if (line.trim()) this.lines.push(JSON.parse(line) as Record<string, unknown>);
    callback();
  }

  events(name: string): Array<Record<string, unknown>> {
    return this.lines.filter((l) => l.event === name);
  }
}

export interface TestBroker {
  app: FastifyInstance;
  config: Config;
  /** The primary account's emulator (emulators[0]). */
  emulator: CloudflareEmulator;
  /** One emulator per Cloudflare account, in the order of CLOUDFLARE_ACCOUNTS. */
  emulators: CloudflareEmulator[];
  db: TestDatabase;
  logs: LogCapture;
  /** A Redis client on the same key prefix as the app, for assertions. */
  redis: RedisClient;
  token(userId: string, ttlSeconds?: number): string;
  auth(userId: string): { authorization: string };
  close(): Promise<void>;
}

export interface TestBrokerOptions extends Omit<BuildAppOptions, 'logger'> {
  env?: Record<string, string>;
  /** Share these with another broker (several instances on one database, Redis and Cloudflare). */
  shared?: { db: TestDatabase; emulator: CloudflareEmulator; redisKeyPrefix: string };
  /** Use this database (e.g. on a private PostgreSQL) instead of a fresh one on the shared server. */
  db?: TestDatabase;
  /** The run's single Redis or its Redis Cluster (default: the file's, see useRedisTopologyForFile); `env` may name another. */
  redis?: RedisTopology;
  /**
   * More than one Cloudflare account: one emulator each (account `acc<i>`, zone under
   * `<name>.tunnels.test`), given to the broker as CLOUDFLARE_ACCOUNTS. Not with `shared`.
   */
  accounts?: Array<{ name: string; maxTunnels?: number }>;
}

/** The tunnel domain of test account `name` (see TestBrokerOptions.accounts). */
export function accountDomain(name: string): string {
  return `${name}.${TEST_DOMAIN}`;
}

/** Account and zone ids the emulator of test account `index` answers for (32 hex digits at most). */
function accountIds(index: number): { accountId: string; zoneId: string } {
  return { accountId: `acc${index}`.padEnd(32, '0'), zoneId: `zone${index}`.padEnd(32, '0') };
}

async function startAccountEmulators(accounts: NonNullable<TestBrokerOptions['accounts']>): Promise<{ emulators: CloudflareEmulator[]; env: Record<string, string> }> {
  const emulators = await Promise.all(accounts.map((a, i) => startCloudflareEmulator({
    ...accountIds(i),
    zoneName: accountDomain(a.name),
    apiToken: `token-of-${a.name}`,
    // The emulator refuses past the broker's own capacity: a broker that ever asked for one
    // tunnel too many would see its create fail (a 502), which the tests treat as a bug.
    ...(a.maxTunnels !== undefined ? { maxTunnels: a.maxTunnels } : {}),
  })));
  const list = accounts.map((a, i) => ({
    name: a.name,
    apiToken: emulators[i]!.apiToken,
    accountId: emulators[i]!.accountId,
    zoneId: emulators[i]!.zoneId,
    tunnelDomain: accountDomain(a.name),
    baseUrl: emulators[i]!.url,
    ...(a.maxTunnels !== undefined ? { maxTunnels: a.maxTunnels } : {}),
  }));
  return { emulators, env: { CLOUDFLARE_ACCOUNTS: JSON.stringify(list) } };
}

/**
 * One broker for the whole test file: registers the hooks that start it before the file's
 * tests and close it after them, and returns a stand-in that forwards every property to it,
 * so tests use `broker.app`, `broker.auth(…)` as they would the started broker itself.
 */
export function useTestBroker(options: TestBrokerOptions = {}): TestBroker {
  let started: TestBroker | undefined;
  beforeAll(async () => {
    started = await startTestBroker(options);
  });
  afterAll(async () => {
    await started?.close();
  });
  return new Proxy({} as TestBroker, {
    get(_target, key) {
      if (!started) throw new Error('useTestBroker: the broker starts in beforeAll; use it inside hooks and tests');
      const value: unknown = Reflect.get(started, key);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(started) : value;
    },
  });
}

/**
 * A broker on its own database, Redis key prefix and Cloudflare emulator, so test files
 * run in parallel and in any order. The reaper does not run on a timer unless asked:
 * tests call `app.reaper.sweep()` when they mean it.
 */
export async function startTestBroker(options: TestBrokerOptions = {}): Promise<TestBroker> {
  const db = options.shared?.db ?? options.db ?? (await createTestDatabase());
  const multi = options.accounts ? await startAccountEmulators(options.accounts) : undefined;
  const emulator = multi?.emulators[0] ?? options.shared?.emulator ?? (await startCloudflareEmulator({ zoneName: TEST_DOMAIN }));
  const emulators = multi?.emulators ?? [emulator];
  const keyPrefix = options.shared?.redisKeyPrefix ?? testKeyPrefix();
  const config = loadConfig({
    NODE_ENV: 'test',
    DATABASE_URL: db.url,
    // A test that names its own Redis (a private server, sentinels) gets that one.
    ...(options.env?.REDIS_URL !== undefined || options.env?.REDIS_SENTINELS !== undefined || options.env?.REDIS_CLUSTER_NODES !== undefined ? {} : redisEnv(options.redis)),
    REDIS_KEY_PREFIX: keyPrefix,
    JWT_SECRET: TEST_JWT_SECRET,
    ...(multi?.env ?? {
      CLOUDFLARE_API_TOKEN: emulator.apiToken,
      CLOUDFLARE_ACCOUNT_ID: emulator.accountId,
      CLOUDFLARE_ZONE_ID: emulator.zoneId,
      CLOUDFLARE_BASE_URL: emulator.url,
      TUNNEL_DOMAIN: TEST_DOMAIN,
    }),
    CLOUDFLARE_TIMEOUT_MS: '2000',
    LOG_LEVEL: 'debug',
    ...options.env,
  });
  const logs = new LogCapture();
  const app = await buildApp(config, {
    ...options,
    startReaper: options.startReaper ?? false,
    logger: pino(loggerOptions(config), logs),
  });
  await app.ready();
  // The broker's own client factory, so a broker on sentinels gets a helper client on them too.
  const redis = createRedisClient(config.redis, { enableOfflineQueue: true });
  redis.on('error', () => {});
  const token = (userId: string, ttlSeconds?: number) => signAccessToken(TEST_JWT_SECRET, userId, ttlSeconds);
  return {
    app,
    config,
    emulator,
    emulators,
    db,
    logs,
    redis,
    token,
    auth: (userId) => ({ authorization: `Bearer ${token(userId)}` }),
    async close() {
      await app.close();
      if (!options.shared) {
        // A private Redis may be stopped by now; on the shared one, cleanup-hooks.ts checks this again.
        await deleteKeysUnderPrefix(redis, keyPrefix).catch(() => {});
        await Promise.all(emulators.map((e) => e.close()));
        if (!options.db) await db.drop();
      }
      redis.disconnect();
    },
  };
}

/** Polls `check` until it returns a truthy value or the deadline passes. */
export async function eventually<T>(check: () => Promise<T | undefined | null | false> | T | undefined | null | false, options: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  let last: unknown;
  for (let i = 0; i < 10_000; i++) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, options.intervalMs ?? 50));
  }
  throw new Error(`Timed out waiting for ${options.what ?? 'condition'}${last ? `: ${String(last)}` : ''}`);
}

/**
 * Makes a tunnel due now, as if its heartbeat deadline, and any lease on it, had passed (a
 * failed teardown's retry time has come, or its holder died): what waiting would do, at once.
 */
export async function makeDue(broker: Pick<TestBroker, 'app' | 'redis'>, tunnelId: string): Promise<void> {
  await broker.app.prisma.$executeRaw`UPDATE tunnels SET lease_expires_at = clock_timestamp() - interval '1 millisecond' WHERE id = ${tunnelId}::uuid AND lease_expires_at IS NOT NULL`;
  await broker.redis.zadd(heartbeatKeysOf(tunnelId).deadlines, 0, tunnelId);
}

/** The tunnel's heartbeat deadline in Redis (epoch ms), or null when none is tracked. */
export async function deadlineOf(redis: RedisClient, tunnelId: string): Promise<number | null> {
  const score = await redis.zscore(heartbeatKeysOf(tunnelId).deadlines, tunnelId);
  return score === null ? null : Number(score);
}

/** Whether Redis accepts heartbeats for the tunnel: its owner is recorded and its deadline is ahead. */
export async function isHeartbeating(redis: RedisClient, tunnelId: string): Promise<boolean> {
  const [owner, deadline] = await Promise.all([redis.hget(heartbeatKeysOf(tunnelId).owners, tunnelId), deadlineOf(redis, tunnelId)]);
  return owner !== null && deadline !== null && deadline > Date.now();
}
