import { randomUUID } from 'node:crypto';
import type { CloudflareEmulator } from '../../src/cloudflare/emulator/emulator.js';
import { signAccessToken } from '../../src/auth/access-token.js';
import { TEST_DOMAIN, TEST_JWT_SECRET } from './broker.js';
import { freePort, runTs, type RunningProcess } from './process.js';
import { redisEnv } from './redis-keys.js';

export interface BrokerProcess {
  name: string;
  baseUrl: string;
  proc: RunningProcess;
  /** Throws on a network error or after `timeoutMs` (default 30 s). */
  request(method: string, path: string, options?: { userId?: string; body?: unknown; headers?: Record<string, string>; timeoutMs?: number }): Promise<{ status: number; body: any; headers: Headers }>;
  /** kill -9: no shutdown hooks, no cleanup. */
  kill9(): Promise<void>;
  /** SIGTERM and wait; returns the exit code. */
  stop(): Promise<number | null>;
}

export interface BrokerProcessOptions {
  name?: string;
  databaseUrl: string;
  emulator: CloudflareEmulator;
  redisKeyPrefix: string;
  env?: Record<string, string>;
}

/** A real broker process (`npm start`'s entry point) on a loopback port, sharing a database, Redis prefix and emulator. */
export async function spawnBroker(options: BrokerProcessOptions): Promise<BrokerProcess> {
  const port = await freePort();
  const proc = runTs('src/server.ts', [], {
    NODE_ENV: 'test',
    PORT: String(port),
    HOST: '127.0.0.1',
    DATABASE_URL: options.databaseUrl,
    ...redisEnv(),
    REDIS_KEY_PREFIX: options.redisKeyPrefix,
    JWT_SECRET: TEST_JWT_SECRET,
    CLOUDFLARE_API_TOKEN: options.emulator.apiToken,
    CLOUDFLARE_ACCOUNT_ID: options.emulator.accountId,
    CLOUDFLARE_ZONE_ID: options.emulator.zoneId,
    CLOUDFLARE_BASE_URL: options.emulator.url,
    TUNNEL_DOMAIN: TEST_DOMAIN,
    LOG_LEVEL: 'info',
    ...options.env,
  });
  try {
    await proc.waitFor(/tunnel broker ready/, 30_000);
  } catch (error) {
    // A broker still starting would go on to migrate (even re-create) the database and write to Redis.
    await proc.stop('SIGKILL');
    throw error;
  }
  const baseUrl = `http://127.0.0.1:${port}`;
  return {
    name: options.name ?? `broker-${randomUUID().slice(0, 4)}`,
    baseUrl,
    proc,
    async request(method, path, { userId, body, headers = {}, timeoutMs = 30_000 } = {}) {
      const res = await fetch(`${baseUrl}${path}`, {
        method,
        headers: {
          ...(userId ? { authorization: `Bearer ${signAccessToken(TEST_JWT_SECRET, userId, 3600)}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...headers,
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
    },
    async kill9() {
      await proc.stop('SIGKILL');
    },
    stop: () => proc.stop('SIGTERM'),
  };
}
