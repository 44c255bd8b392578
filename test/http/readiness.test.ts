import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_READINESS_TIMEOUT_MS } from '../../src/plugins/readiness.js';
import { eventually, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { type PrivatePostgres, type PrivateRedis, startBrokerOnPrivatePostgres, startPrivateRedis } from '../helpers/private-services.js';

/**
 * GET /readyz against real dependencies that go away: a private Redis that is stopped or
 * paused (it hangs), and a private PostgreSQL that is stopped. The shared servers stay up.
 */

const readyz = (broker: TestBroker) => broker.app.inject({ method: 'GET', url: '/readyz' });

function expectNotReady(res: Awaited<ReturnType<typeof readyz>>, checks: { postgres: string; redis: string }) {
  expect(res.statusCode, res.body).toBe(503);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  expect(res.headers['retry-after']).toBeDefined();
  const body = res.json();
  expect(Object.keys(body).sort()).toEqual(['code', 'details', 'message']);
  expect(body.code).toBe('SERVICE_UNAVAILABLE');
  expect(body.details).toEqual({ checks });
  for (const [name, result] of Object.entries(checks)) if (result !== 'ok') expect(body.message).toContain(name);
  // Nothing about the dependency's address or driver leaks.
  expect(res.body).not.toMatch(/127\.0\.0\.1|ECONNREFUSED|prisma|ioredis/i);
}

describe('GET /readyz with both dependencies up', () => {
  let all: TestBroker;
  let api: TestBroker;
  let reaper: TestBroker;
  beforeAll(async () => {
    all = await startTestBroker();
    const shared = { db: all.db, emulator: all.emulator, redisKeyPrefix: all.config.redis.keyPrefix };
    api = await startTestBroker({ env: { BROKER_ROLE: 'api' }, shared });
    reaper = await startTestBroker({ env: { BROKER_ROLE: 'reaper' }, shared });
  });
  afterAll(async () => {
    await reaper?.close();
    await api?.close();
    await all?.close();
  });

  it('answers 200 with every check ok, without a token, in every BROKER_ROLE', async () => {
    for (const broker of [all, api, reaper]) {
      const res = await readyz(broker);
      expect(res.statusCode, `${broker.config.role}: ${res.body}`).toBe(200);
      expect(res.json()).toEqual({ status: 'ready', checks: { postgres: 'ok', redis: 'ok' } });
    }
  });

  it('comes with /metrics and /docs in every BROKER_ROLE', async () => {
    for (const broker of [all, api, reaper]) {
      const metrics = await broker.app.inject({ method: 'GET', url: '/metrics' });
      expect(metrics.statusCode, broker.config.role).toBe(200);
      expect(metrics.body, broker.config.role).toContain('tunnel_broker_live_tunnels{status="active"}');
      const docs = await broker.app.inject({ method: 'GET', url: '/docs/json' });
      expect(Object.keys(docs.json().paths), broker.config.role).toEqual(expect.arrayContaining(['/healthz', '/readyz', '/metrics']));
    }
  });

  it('is not access-logged per probe, and ignores any Authorization header', async () => {
    const before = all.logs.lines.length;
    for (let i = 0; i < 30; i++) {
      const res = await all.app.inject({ method: 'GET', url: '/readyz', headers: { authorization: 'Bearer nonsense' } });
      expect(res.statusCode).toBe(200);
    }
    expect(all.logs.lines.slice(before).filter((l) => l.url === '/readyz' || (l.req as { url?: string } | undefined)?.url === '/readyz')).toEqual([]);
  });
});

describe('GET /readyz when Redis fails', () => {
  let redis: PrivateRedis;
  let broker: TestBroker;
  beforeAll(async () => {
    redis = await startPrivateRedis();
    broker = await startTestBroker({ env: { REDIS_URL: redis.url } });
  });
  afterAll(async () => {
    await broker?.close();
    await redis?.close();
  });

  it('answers 503 naming Redis within the timeout while Redis hangs, then 200 once it answers again', async () => {
    expect((await readyz(broker)).statusCode).toBe(200);
    const pauseMs = 4_000;
    const admin = new Redis(redis.url, { maxRetriesPerRequest: 0 });
    admin.on('error', () => {});
    try {
      // Every client's commands now wait until the pause ends: a hung Redis, without a stopped process.
      await admin.call('CLIENT', 'PAUSE', String(pauseMs), 'ALL');
      const started = performance.now();
      const res = await readyz(broker);
      const elapsed = performance.now() - started;
      expectNotReady(res, { postgres: 'ok', redis: 'timeout' });
      expect(elapsed).toBeGreaterThanOrEqual(DEFAULT_READINESS_TIMEOUT_MS - 50);
      expect(elapsed).toBeLessThan(pauseMs - 1_000);
    } finally {
      admin.disconnect();
    }
    await eventually(async () => (await readyz(broker)).statusCode === 200, { timeoutMs: pauseMs + 10_000, what: 'ready again after the pause' });
  });

  it('answers 503 naming Redis at once while Redis is stopped, then 200 after it restarts', async () => {
    await redis.stop();
    try {
      // ioredis notices the closed connection asynchronously (a probe racing it may say
      // "timeout"); once it has, every probe says "unavailable", at once.
      await eventually(async () => (await readyz(broker)).json().details?.checks?.redis === 'unavailable', { timeoutMs: 10_000, what: 'redis: unavailable' });
      for (let i = 0; i < 3; i++) {
        const started = performance.now();
        expectNotReady(await readyz(broker), { postgres: 'ok', redis: 'unavailable' });
        // Rather than queue a PING on a client that is reconnecting.
        expect(performance.now() - started).toBeLessThan(DEFAULT_READINESS_TIMEOUT_MS);
      }
    } finally {
      await redis.start();
    }
    await eventually(async () => (await readyz(broker)).statusCode === 200, { timeoutMs: 15_000, what: 'ready after Redis restarted' });
    expect((await readyz(broker)).json()).toEqual({ status: 'ready', checks: { postgres: 'ok', redis: 'ok' } });
  });
});

describe('GET /readyz when PostgreSQL fails', () => {
  let postgres: PrivatePostgres;
  let broker: TestBroker;
  beforeAll(async () => {
    ({ postgres, broker } = await startBrokerOnPrivatePostgres());
  }, 60_000);
  afterAll(async () => {
    await broker?.close();
    await postgres?.close();
  });

  it('answers 503 naming PostgreSQL while it is stopped, then 200 after it restarts', async () => {
    expect((await readyz(broker)).statusCode).toBe(200);
    await postgres.stop();
    try {
      const started = performance.now();
      expectNotReady(await readyz(broker), { postgres: 'unavailable', redis: 'ok' });
      expect(performance.now() - started).toBeLessThan(DEFAULT_READINESS_TIMEOUT_MS + 500);
      // Liveness does not depend on PostgreSQL: the process itself is fine.
      expect((await broker.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    } finally {
      await postgres.start();
    }
    await eventually(async () => (await readyz(broker)).statusCode === 200, { timeoutMs: 15_000, what: 'ready after PostgreSQL restarted' });
  });
});
