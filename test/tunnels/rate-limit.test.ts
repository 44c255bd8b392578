import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../helpers/broker.js';

// Two brokers on one Redis key space: the budget must be shared, as behind a load balancer.
let a: TestBroker;
let b: TestBroker;
beforeAll(async () => {
  a = await startTestBroker({ env: { CREATE_RATE_LIMIT_PER_MINUTE: '4', MAX_TUNNELS_PER_USER: '100' } });
  b = await startTestBroker({
    env: { CREATE_RATE_LIMIT_PER_MINUTE: '4', MAX_TUNNELS_PER_USER: '100' },
    shared: { db: a.db, emulator: a.emulator, redisKeyPrefix: a.config.redis.keyPrefix },
  });
});
afterAll(async () => {
  await b?.close();
  await a?.close();
});

const create = (broker: TestBroker, userId: string, payload: unknown = { port: 3000 }) =>
  broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: payload as object });

describe('create rate limit', () => {
  it('allows CREATE_RATE_LIMIT_PER_MINUTE creates per user across all brokers, then 429 RATE_LIMITED with Retry-After', async () => {
    const userId = `user-${randomUUID()}`;
    const statuses = [];
    for (const broker of [a, b, a, b]) statuses.push((await create(broker, userId)).statusCode);
    expect(statuses).toEqual([201, 201, 201, 201]);
    for (const broker of [a, b]) {
      const res = await create(broker, userId);
      expect(res.statusCode).toBe(429);
      expect(res.json().code).toBe('RATE_LIMITED');
      const retryAfter = Number(res.headers['retry-after']);
      expect(retryAfter).toBeGreaterThan(0);
      expect(retryAfter).toBeLessThanOrEqual(60);
    }
  });

  it('is keyed by user, not by IP', async () => {
    const first = `user-${randomUUID()}`;
    for (let i = 0; i < 5; i++) await create(a, first);
    expect((await create(a, first)).statusCode).toBe(429);
    expect((await create(a, `user-${randomUUID()}`)).statusCode).toBe(201);
  });

  it('counts invalid attempts too, and does not limit heartbeats or reads', async () => {
    const userId = `user-${randomUUID()}`;
    for (let i = 0; i < 4; i++) expect((await create(a, userId, { port: 0 })).statusCode).toBe(400);
    expect((await create(a, userId)).statusCode).toBe(429);
    for (let i = 0; i < 10; i++) expect((await a.app.inject({ method: 'GET', url: '/v1/tunnels', headers: a.auth(userId) })).statusCode).toBe(200);
  });
});
