import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFloor } from '../../bench/floor-server.js';
import { summariseProfile, type CpuProfile } from '../../bench/lib/profile.js';
import { countDeadlines, insertTunnels, makeTunnels, markEpoch, seedLiveState, setDeadlines } from '../../bench/lib/seed.js';
import { fmt, markdownTable, median, percentile, ratio, textTable } from '../../bench/lib/stats.js';
import { signAccessToken } from '../../src/auth/access-token.js';
import { HeartbeatTokens } from '../../src/auth/heartbeat-token.js';
import { HeartbeatStore } from '../../src/tunnels/heartbeat-store.js';
import { TEST_JWT_SECRET } from '../helpers/broker.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { REDIS_URL, testKeyPrefix } from '../helpers/redis-keys.js';

// `npm run bench` is not part of `npm test`; this checks that its pure parts and its seeding
// still fit the broker, so the benchmark does not silently measure nothing.

describe('bench statistics and tables', () => {
  it('medians, percentiles and ratios', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([Number.NaN, 5])).toBe(5);
    expect(median([])).toBeNaN();
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50)).toBe(5);
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 99)).toBe(10);
    expect(ratio(3, 4)).toBe(0.75);
    expect(ratio(1, 0)).toBeNaN();
    expect(fmt(12_345.678, 1)).toBe('12,345.7');
    expect(fmt(Number.NaN)).toBe('n/a');
  });

  it('formats Markdown and text tables', () => {
    expect(markdownTable(['a', 'b'], [['1', 'x|y']])).toBe('| a | b |\n| --- | --- |\n| 1 | x\\|y |');
    expect(textTable(['name', 'v'], [['alpha', '1'], ['b', '22']])).toBe('name   v\n-----  --\nalpha  1\nb      22');
  });

  it('summarises a CPU profile by self time, skipping start-up', () => {
    const frame = (functionName: string, url: string) => ({ functionName, url, lineNumber: 0, columnNumber: 0, scriptId: '0' });
    const profile: CpuProfile = {
      nodes: [
        { id: 1, callFrame: frame('(root)', ''), children: [2, 3, 4] },
        { id: 2, callFrame: frame('(idle)', '') },
        { id: 3, callFrame: frame('verify', 'file:///x/node_modules/fast-jwt/src/verifier.js') },
        { id: 4, callFrame: frame('touch', 'file:///x/src/tunnels/heartbeat-store.ts') },
      ],
      startTime: 0,
      endTime: 10_000,
      // 1 ms apart: the first three (start-up) are skipped.
      samples: [3, 3, 3, 3, 4, 4, 4, 2, 2, 2],
      timeDeltas: Array(10).fill(1000),
    };
    const summary = summariseProfile(profile, { skipMs: 3.5 });
    expect(summary.idlePct).toBeCloseTo(300 / 7);
    expect(summary.topFrames[0]).toEqual({ name: 'touch src/tunnels/heartbeat-store.ts:1', selfPct: 75 });
    expect(summary.topModules.map((m) => m.name)).toEqual(['src/tunnels/heartbeat-store.ts', 'pkg:fast-jwt']);
  });
});

describe('bench seeding', () => {
  let db: TestDatabase;
  let redis: Redis;
  const prefix = testKeyPrefix('bench');

  beforeAll(async () => {
    db = await createTestDatabase();
    redis = new Redis(REDIS_URL, { keyPrefix: prefix, maxRetriesPerRequest: 1 });
  });
  afterAll(async () => {
    redis?.disconnect();
    await db?.drop();
  });

  it('seeds rows and Redis state that the broker\'s own HeartbeatStore accepts', async () => {
    const tunnels = makeTunnels(50, { users: 10, domain: 'tunnels.test' });
    expect(new Set(tunnels.map((t) => t.ownerId)).size).toBe(10);
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      expect(await insertTunnels(client, tunnels)).toBe(50);
      const { rows } = await client.query<{ n: string }>("SELECT count(*)::text AS n FROM tunnels WHERE status = 'active'");
      expect(rows[0]!.n).toBe('50');
    } finally {
      await client.end();
    }
    await seedLiveState(redis, tunnels, 60_000);
    await markEpoch(redis);
    expect(await countDeadlines(redis)).toBe(50);

    const store = new HeartbeatStore(redis, { ttlSeconds: 60 });
    // A heartbeat of a seeded tunnel by its owner succeeds; by someone else it does not.
    expect(await store.touch(tunnels[0]!.id, tunnels[0]!.ownerId)).toEqual(expect.any(Number));
    expect(await store.touch(tunnels[1]!.id, 'someone-else')).toBeNull();
    // Deadlines moved into the past make exactly those tunnels due.
    const lapsed = tunnels.slice(0, 5).map((t) => t.id);
    await setDeadlines(redis, lapsed, Date.now() - 1_000);
    const { claims } = await store.claimDue(100, 60_000);
    expect(claims.map((c) => c.id).sort()).toEqual([...lapsed].sort());
  });

  it('the floor verifies a heartbeat token for its own tunnel without the broker, and writes one key', async () => {
    const app = await buildFloor({ redis, jwtSecret: TEST_JWT_SECRET, ttlSeconds: 60 });
    try {
      const id = randomUUID();
      const tokens = new HeartbeatTokens(TEST_JWT_SECRET);
      const beat = (tunnelId: string, token?: string) =>
        app.inject({ method: 'POST', url: `/v1/tunnels/${tunnelId}/heartbeat`, headers: token ? { authorization: `Bearer ${token}` } : {} });
      const ok = await beat(id, tokens.sign('alice', id));
      expect(ok.statusCode).toBe(200);
      expect(await redis.get(`hb:${id}`)).toBe('alice');
      expect(await redis.ttl(`hb:${id}`)).toBeGreaterThan(50);
      // Another tunnel's token, an access token (another key) and no token are all refused.
      expect((await beat(id, tokens.sign('alice', randomUUID()))).statusCode).toBe(403);
      expect((await beat(id, signAccessToken(TEST_JWT_SECRET, 'alice', 60))).statusCode).toBe(401);
      expect((await beat(id)).statusCode).toBe(401);
    } finally {
      await app.close();
    }
  });

  it('the floor of --tokens=access verifies access tokens under JWT_SECRET', async () => {
    const app = await buildFloor({ redis, jwtSecret: TEST_JWT_SECRET, ttlSeconds: 60, tokens: 'access' });
    try {
      const id = randomUUID();
      const ok = await app.inject({ method: 'POST', url: `/v1/tunnels/${id}/heartbeat`, headers: { authorization: `Bearer ${signAccessToken(TEST_JWT_SECRET, 'bob', 60)}` } });
      expect(ok.statusCode).toBe(200);
      expect(await redis.get(`hb:${id}`)).toBe('bob');
    } finally {
      await app.close();
    }
  });
});
