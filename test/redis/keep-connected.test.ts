import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { keepRedisConnected } from '../../src/redis/keep-connected.js';
import type { RedisClient } from '../../src/redis/redis-client.js';
import { eventually, LogCapture, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { testKeyPrefix, testRedisClient } from '../helpers/redis-keys.js';

const clients: RedisClient[] = [];
const brokers: TestBroker[] = [];
afterAll(async () => {
  for (const client of clients) client.disconnect();
  await Promise.all(brokers.map((b) => b.close()));
});

async function connectedClient(): Promise<RedisClient> {
  const client = testRedisClient(undefined, testKeyPrefix());
  clients.push(client);
  await client.connect();
  return client;
}

describe('keepRedisConnected', () => {
  it('starts a client again after ioredis ended it, and says so once per end', async () => {
    const client = await connectedClient();
    const logs = new LogCapture();
    const stop = keepRedisConnected(client, pino(logs), 50);
    // What ioredis does in its races: the client ends, and every command fails.
    client.disconnect();
    await eventually(() => client.status === 'end', { what: 'the client ended' });
    await expect(client.ping()).rejects.toThrow(/Connection is closed/);
    await eventually(() => client.status === 'ready', { what: 'the client ready again', timeoutMs: 5_000 });
    expect(await client.ping()).toBe('PONG');
    expect(logs.events('redis.ended')).toHaveLength(1);
    stop();
  });

  it('leaves a client ended once stopped (shutdown)', async () => {
    const client = await connectedClient();
    const stop = keepRedisConnected(client, pino(new LogCapture()), 20);
    stop();
    client.disconnect();
    await eventually(() => client.status === 'end', { what: 'the client ended' });
    // Several restart delays later it is still ended.
    const until = Date.now() + 200;
    await eventually(() => Date.now() >= until, { intervalMs: 20 });
    expect(client.status).toBe('end');
  });
});

describe('a broker whose Redis client ioredis ended', () => {
  it('answers heartbeats again within seconds, without a restart', async () => {
    const broker = await startTestBroker();
    brokers.push(broker);
    const user = `user-${randomUUID()}`;
    const created = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(user), payload: { port: 3000 } });
    expect(created.statusCode).toBe(201);
    const beat = () => broker.app.inject({ method: 'POST', url: `/v1/tunnels/${created.json().tunnelId}/heartbeat`, headers: broker.auth(user) });
    broker.app.redis.disconnect();
    await eventually(() => broker.app.redis.status === 'end', { what: 'the client ended' });
    expect((await beat()).statusCode).toBe(503);
    await eventually(async () => (await beat()).statusCode === 200, { what: 'heartbeats answered 200 again', timeoutMs: 10_000, intervalMs: 200 });
    expect(broker.logs.events('redis.ended').length).toBeGreaterThanOrEqual(1);
  });
});
