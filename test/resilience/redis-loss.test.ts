import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startTestBroker, type TestBroker, isHeartbeating } from '../helpers/broker.js';
import { deleteKeysUnderPrefix } from '../helpers/redis-keys.js';
import { startPrivateRedis, type PrivateRedis } from '../helpers/private-services.js';

const TTL_SECONDS = 2;
const env = { TUNNEL_TTL_SECONDS: String(TTL_SECONDS), HEARTBEAT_INTERVAL_SECONDS: '1', REAPER_INTERVAL_SECONDS: '1' };

async function createTunnel(broker: TestBroker, userId: string) {
  const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000 } });
  expect(res.statusCode).toBe(201);
  return res.json().tunnelId as string;
}

const heartbeat = (broker: TestBroker, userId: string, id: string) =>
  broker.app.inject({ method: 'POST', url: `/v1/tunnels/${id}/heartbeat`, headers: broker.auth(userId) });

const status = async (broker: TestBroker, id: string) => (await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id } })).status;

/**
 * Keeps one tunnel heartbeating every 500 ms (inside its 2 s TTL) for as long as the test
 * needs; a 503 (Redis away or being rebuilt) is retried, as an agent would.
 */
function keepAlive(broker: TestBroker, userId: string, id: string) {
  let running = true;
  const codes: number[] = [];
  const done = (async () => {
    while (running) {
      codes.push((await heartbeat(broker, userId, id)).statusCode);
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  return { codes, stop: async () => { running = false; await done; } };
}

describe('Redis flushed (the broker key space comes back empty)', () => {
  let broker: TestBroker;
  beforeAll(async () => {
    broker = await startTestBroker({ env, startReaper: true });
  });
  afterAll(async () => {
    await broker?.close();
  });

  it('notices by itself, rebuilds from PostgreSQL, reaps nothing for a full TTL, and still reaps the silent tunnel later', async () => {
    const userId = `user-${randomUUID()}`;
    const alive = await createTunnel(broker, userId);
    const silent = await createTunnel(broker, userId);
    const beats = keepAlive(broker, userId, alive);
    try {
      const rebuildsBefore = broker.logs.events('heartbeat_state.rebuilt').length;
      await deleteKeysUnderPrefix(broker.redis, broker.config.redis.keyPrefix);
      const flushedAt = Date.now();

      // Noticed without any heartbeat needed: the reaper's next sweep rebuilds.
      await eventually(() => broker.logs.events('heartbeat_state.rebuilt').length > rebuildsBefore, { timeoutMs: 5000, what: 'a rebuild' });
      // Both tunnels are tracked again with a fresh TTL.
      expect([await isHeartbeating(broker.redis, alive), await isHeartbeating(broker.redis, silent)]).toEqual([true, true]);

      // For one full TTL after the flush, nothing is reaped.
      await eventually(() => Date.now() - flushedAt >= TTL_SECONDS * 1000 - 200, { timeoutMs: 5000, intervalMs: 100 });
      expect(await status(broker, silent)).toBe('active');

      // In the end the silent one is reaped, and the heartbeating one survives it.
      await eventually(async () => (await status(broker, silent)) === 'ended', { timeoutMs: (TTL_SECONDS + 3) * 1000, what: 'the silent tunnel reaped' });
      expect(await status(broker, alive)).toBe('active');
    } finally {
      await beats.stop();
    }
    // The agent never heard "not found": at worst a retryable 503.
    expect(beats.codes.every((c) => c === 200 || c === 503)).toBe(true);
    expect(beats.codes.filter((c) => c === 200).length).toBeGreaterThan(2);
  });

  it('answers a heartbeat during the loss with 503 and Retry-After, never 404', async () => {
    const userId = `user-${randomUUID()}`;
    const id = await createTunnel(broker, userId);
    await broker.app.reaper!.stop();
    try {
      await deleteKeysUnderPrefix(broker.redis, broker.config.redis.keyPrefix);
      const res = await heartbeat(broker, userId, id);
      // Either it saw the loss (503) or the rebuild it triggered already finished (200).
      expect([200, 503]).toContain(res.statusCode);
      if (res.statusCode === 503) {
        expect(res.json().code).toBe('SERVICE_UNAVAILABLE');
        expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
      }
      await eventually(async () => (await heartbeat(broker, userId, id)).statusCode === 200, { timeoutMs: 5000, what: 'heartbeats to work again' });
    } finally {
      broker.app.reaper!.start();
    }
  });
});

describe('Redis stopped, then started empty', () => {
  let redis: PrivateRedis;
  let broker: TestBroker;
  beforeAll(async () => {
    redis = await startPrivateRedis();
    broker = await startTestBroker({ env: { ...env, REDIS_URL: redis.url }, startReaper: true });
  });
  afterAll(async () => {
    await broker?.close();
    await redis?.close();
  });

  it('answers 503 while Redis is down, keeps the process up, pauses the reaper, and recovers without reaping live tunnels', async () => {
    const userId = `user-${randomUUID()}`;
    const alive = await createTunnel(broker, userId);
    const silent = await createTunnel(broker, userId);

    await redis.stop();
    const hb = await heartbeat(broker, userId, alive);
    expect(hb.statusCode).toBe(503);
    expect(hb.json().code).toBe('SERVICE_UNAVAILABLE');
    const create = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 1 } });
    expect(create.statusCode).toBe(503);
    expect((await broker.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    // The reaper's sweeps fail and are logged; nothing is ended while Redis is away.
    await eventually(() => broker.logs.events('reaper.sweep_failed').length > 0, { timeoutMs: 5000, what: 'a failed sweep' });
    expect(await status(broker, silent)).toBe('active');
    // Down for longer than a TTL: without the rebuild, both tunnels would be reaped on return.
    await new Promise((r) => setTimeout(r, TTL_SECONDS * 1000));

    await redis.start();
    const restartedAt = Date.now();
    const beats = keepAlive(broker, userId, alive);
    try {
      await eventually(async () => (await heartbeat(broker, userId, alive)).statusCode === 200, { timeoutMs: 10_000, what: 'heartbeats after the restart' });
      await eventually(async () => (await status(broker, silent)) === 'ended', { timeoutMs: (TTL_SECONDS + 6) * 1000, what: 'the silent tunnel reaped' });
      expect(Date.now() - restartedAt).toBeGreaterThanOrEqual(TTL_SECONDS * 1000 - 200);
      expect(await status(broker, alive)).toBe('active');
    } finally {
      await beats.stop();
    }
    const created = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(`user-${randomUUID()}`), payload: { port: 2 } });
    expect(created.statusCode).toBe(201);
  });
});
