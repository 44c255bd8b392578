import { randomUUID } from 'node:crypto';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../helpers/broker.js';
import { appRoutes } from '../helpers/routes.js';

const LIMITS = { CREATE_RATE_LIMIT_PER_MINUTE: '4', READ_RATE_LIMIT_PER_MINUTE: '5', DELETE_RATE_LIMIT_PER_MINUTE: '3', HEARTBEAT_MAX_PER_MINUTE: '6' };

// Two brokers on one Redis key space: the budget must be shared, as behind a load balancer.
let a: TestBroker;
let b: TestBroker;
beforeAll(async () => {
  a = await startTestBroker({ env: { ...LIMITS, MAX_TUNNELS_PER_USER: '100' } });
  b = await startTestBroker({
    env: { ...LIMITS, MAX_TUNNELS_PER_USER: '100' },
    shared: { db: a.db, emulator: a.emulator, redisKeyPrefix: a.config.redis.keyPrefix },
  });
});
afterAll(async () => {
  await b?.close();
  await a?.close();
});

const newUser = () => `user-${randomUUID()}`;

const create = (broker: TestBroker, userId: string, payload: unknown = { port: 3000 }) =>
  broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: payload as object });
const list = (broker: TestBroker, userId: string) => broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: broker.auth(userId) });
const get = (broker: TestBroker, userId: string, id: string) => broker.app.inject({ method: 'GET', url: `/v1/tunnels/${id}`, headers: broker.auth(userId) });
const remove = (broker: TestBroker, userId: string, id: string) => broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${id}`, headers: broker.auth(userId) });
const heartbeat = (broker: TestBroker, userId: string, id: string) => broker.app.inject({ method: 'POST', url: `/v1/tunnels/${id}/heartbeat`, headers: broker.auth(userId) });

function expectRateLimited(res: LightMyRequestResponse, max: number): void {
  expect(res.statusCode).toBe(429);
  expect(res.json()).toMatchObject({ code: 'RATE_LIMITED', message: expect.stringContaining(`at most ${max} requests per minute`) });
  const retryAfter = Number(res.headers['retry-after']);
  expect(retryAfter).toBeGreaterThan(0);
  expect(retryAfter).toBeLessThanOrEqual(60);
}

async function rejections(broker: TestBroker, limit: string): Promise<number> {
  const text = (await broker.app.inject({ method: 'GET', url: '/metrics' })).body;
  return Number(new RegExp(`^tunnel_broker_rate_limit_rejections_total\\{limit="${limit}"\\} (\\d+)$`, 'm').exec(text)?.[1]);
}

describe('create rate limit', () => {
  it('allows CREATE_RATE_LIMIT_PER_MINUTE creates per user across all brokers, then 429 RATE_LIMITED with Retry-After', async () => {
    const userId = newUser();
    const statuses = [];
    for (const broker of [a, b, a, b]) statuses.push((await create(broker, userId)).statusCode);
    expect(statuses).toEqual([201, 201, 201, 201]);
    for (const broker of [a, b]) expectRateLimited(await create(broker, userId), 4);
  });

  it('is keyed by user, not by IP', async () => {
    const first = newUser();
    for (let i = 0; i < 5; i++) await create(a, first);
    expect((await create(a, first)).statusCode).toBe(429);
    expect((await create(a, newUser())).statusCode).toBe(201);
  });

  it('counts invalid attempts too', async () => {
    const userId = newUser();
    for (let i = 0; i < 4; i++) expect((await create(a, userId, { port: 0 })).statusCode).toBe(400);
    expect((await create(a, userId)).statusCode).toBe(429);
  });
});

describe('read and delete rate limits', () => {
  it('allows READ_RATE_LIMIT_PER_MINUTE lists per user across all brokers, then 429 RATE_LIMITED with Retry-After', async () => {
    const userId = newUser();
    const before = await rejections(a, 'read_rate');
    const statuses = [];
    for (const broker of [a, b, a, b, a]) statuses.push((await list(broker, userId)).statusCode);
    expect(statuses).toEqual([200, 200, 200, 200, 200]);
    for (const broker of [b, a]) expectRateLimited(await list(broker, userId), 5);
    expect(await rejections(a, 'read_rate')).toBe(before + 1);
    // Another user's budget is untouched.
    expect((await list(a, newUser())).statusCode).toBe(200);
  });

  it('allows READ_RATE_LIMIT_PER_MINUTE gets of a tunnel per user across all brokers, found or not, then 429', async () => {
    const userId = newUser();
    const { tunnelId } = (await create(a, userId)).json();
    const statuses = [];
    for (const broker of [a, b, a]) statuses.push((await get(broker, userId, tunnelId)).statusCode);
    for (const broker of [b, a]) statuses.push((await get(broker, userId, randomUUID())).statusCode);
    expect(statuses).toEqual([200, 200, 200, 404, 404]);
    for (const broker of [a, b]) expectRateLimited(await get(broker, userId, tunnelId), 5);
  });

  it('allows DELETE_RATE_LIMIT_PER_MINUTE deletes per user across all brokers, then 429 without ending the tunnel', async () => {
    const userId = newUser();
    const { tunnelId } = (await create(a, userId)).json();
    const before = await rejections(b, 'delete_rate');
    const statuses = [];
    for (const broker of [a, b, a]) statuses.push((await remove(broker, userId, randomUUID())).statusCode);
    expect(statuses).toEqual([404, 404, 404]);
    for (const broker of [b, a]) expectRateLimited(await remove(broker, userId, tunnelId), 3);
    expect(await rejections(b, 'delete_rate')).toBe(before + 1);
    expect((await a.app.prisma.tunnel.findUniqueOrThrow({ where: { id: tunnelId } })).status).toBe('active');
  });

  it('counts each route on its own: a user who spent their list budget can still get, delete and create', async () => {
    const userId = newUser();
    const { tunnelId } = (await create(a, userId)).json();
    for (let i = 0; i < 5; i++) expect((await list(a, userId)).statusCode).toBe(200);
    expect((await list(b, userId)).statusCode).toBe(429);

    expect((await get(b, userId, tunnelId)).statusCode).toBe(200);
    expect((await remove(b, userId, tunnelId)).statusCode).toBe(204);
    expect((await create(b, userId)).statusCode).toBe(201);
  });

  it('puts no per-user limit on heartbeats, and heartbeats spend no other budget', async () => {
    const userId = newUser();
    const { tunnelId } = (await create(a, userId)).json();
    // Within the per-tunnel bound (HEARTBEAT_MAX_PER_MINUTE, below), never the per-user ones.
    for (let i = 0; i < 6; i++) {
      const res = await heartbeat(i % 2 ? a : b, userId, tunnelId);
      expect(res.statusCode).toBe(200);
      expect(res.headers['x-ratelimit-limit']).toBeUndefined();
    }
    expect((await list(a, userId)).statusCode).toBe(200);
  });
});

describe('every /v1 route', () => {
  it('has a per-user rate limit, except the heartbeat', async () => {
    // Fastify's own route tree, so a route added later is walked too. The limit shows in the
    // x-ratelimit-* headers @fastify/rate-limit adds to every response of a limited route,
    // whatever its status; each request here uses a fresh user, so none is refused.
    const expected: Record<string, string | undefined> = {
      'POST /v1/tunnels/': LIMITS.CREATE_RATE_LIMIT_PER_MINUTE,
      'GET /v1/tunnels/': LIMITS.READ_RATE_LIMIT_PER_MINUTE,
      'GET /v1/tunnels/:tunnelId': LIMITS.READ_RATE_LIMIT_PER_MINUTE,
      'DELETE /v1/tunnels/:tunnelId': LIMITS.DELETE_RATE_LIMIT_PER_MINUTE,
      // Exactly one Redis call, bounded inside its own script: no @fastify/rate-limit.
      'POST /v1/tunnels/:tunnelId/heartbeat': undefined,
    };
    const routes = appRoutes(a.app).filter((r) => r.path.startsWith('/v1/') && r.method !== 'HEAD');
    expect(routes.length).toBeGreaterThanOrEqual(Object.keys(expected).length);
    const found: Record<string, string | undefined> = {};
    for (const { method, path } of routes) {
      const url = path.replace(/:\w+/g, randomUUID());
      const res = await a.app.inject({ method: method as 'GET', url, headers: a.auth(newUser()), ...(method === 'POST' || method === 'PUT' || method === 'PATCH' ? { payload: {} } : {}) });
      expect(res.statusCode, `${method} ${path}`).toBeLessThan(500);
      found[`${method} ${path}`] = res.headers['x-ratelimit-limit'] as string | undefined;
    }
    for (const [route, limit] of Object.entries(found)) {
      if (route in expected) expect(limit, route).toBe(expected[route]);
      else expect(limit, `${route} has no rate limit: give it config.rateLimit = perUserRateLimit(…)`).toMatch(/^\d+$/);
    }
    expect(Object.keys(found).sort()).toEqual(expect.arrayContaining(Object.keys(expected).sort()));
  });
});

describe('heartbeats', () => {
  it('are bounded per tunnel inside their one Redis call: past HEARTBEAT_MAX_PER_MINUTE, 429 with Retry-After, across brokers', async () => {
    const userId = newUser();
    const first = (await create(a, userId)).json().tunnelId as string;
    const second = (await create(a, userId)).json().tunnelId as string;
    // Six a minute, counted together by both brokers.
    for (let i = 0; i < 6; i++) expect((await heartbeat(i % 2 === 0 ? a : b, userId, first)).statusCode).toBe(200);
    const refused = await heartbeat(b, userId, first);
    expect(refused.statusCode).toBe(429);
    expect(refused.json()).toMatchObject({ code: 'RATE_LIMITED' });
    const retryAfter = Number(refused.headers['retry-after']);
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(60);
    // The bound is per tunnel: the user's other tunnel still heartbeats.
    expect((await heartbeat(a, userId, second)).statusCode).toBe(200);
  });
});
