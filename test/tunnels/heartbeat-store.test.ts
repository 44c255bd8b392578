import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RedisClient } from '../../src/redis/redis-client.js';
import { HEARTBEAT_BUCKET_KEYS, HEARTBEAT_BUCKETS, heartbeatBucket, heartbeatKeysOf } from '../../src/tunnels/heartbeat-keys.js';
import { HeartbeatStore, type RestoreEntry } from '../../src/tunnels/heartbeat-store.js';
import { deleteKeysUnderPrefix, REDIS_TOPOLOGIES, testKeyPrefix, testRedisClient } from '../helpers/redis-keys.js';

/** Rows to restore, one page; `during` runs between reading them and restoring them. */
function rows(entries: RestoreEntry[], during?: () => Promise<void>): () => AsyncIterable<RestoreEntry[]> {
  return async function* load() {
    await during?.();
    yield entries;
  };
}

/** A tunnel id in each bucket, found by trying ids until every bucket has one (bounded). */
function idPerBucket(): string[] {
  const ids: string[] = [];
  for (let i = 0; i < 10_000 && ids.filter(Boolean).length < HEARTBEAT_BUCKETS; i++) {
    const id = `tunnel-${i}`;
    ids[heartbeatBucket(id)] ??= id;
  }
  return ids;
}

describe('heartbeat key layout', () => {
  it('spreads tunnels over every bucket, none carrying more than twice its share', () => {
    const counts = new Array<number>(HEARTBEAT_BUCKETS).fill(0);
    for (let i = 0; i < 16_000; i++) counts[heartbeatBucket(crypto.randomUUID())]!++;
    expect(Math.min(...counts)).toBeGreaterThan(500);
    expect(Math.max(...counts)).toBeLessThan(2_000);
  });

  it('gives every key of a bucket the same hash tag, and each bucket its own', () => {
    const tags = HEARTBEAT_BUCKET_KEYS.map((k) => {
      const keys = [k.owners, k.deadlines, k.epoch, k.rebuildLock, k.rate('x')];
      const found = new Set(keys.map((key) => /\{([^}]+)\}/.exec(key)?.[1]));
      expect(found.size).toBe(1);
      return [...found][0];
    });
    expect(new Set(tags).size).toBe(HEARTBEAT_BUCKETS);
  });
});

describe.each(REDIS_TOPOLOGIES)('HeartbeatStore on %s Redis', (topology) => {
  const prefix = testKeyPrefix(`heartbeat-store-${topology}`);
  let redis: RedisClient;
  beforeAll(async () => {
    redis = testRedisClient(topology, prefix);
    await redis.connect();
  });
  afterAll(async () => {
    await deleteKeysUnderPrefix(redis, prefix);
    redis.disconnect();
  });

  it('accepts heartbeats from the owner only, and refuses them once the deadline has passed', async () => {
    await deleteKeysUnderPrefix(redis, prefix);
    const store = new HeartbeatStore(redis, { ttlSeconds: 60 });
    await store.rebuildIfLost(rows([]), 0);
    const ids = idPerBucket();
    for (const id of ids) await store.start(id, 'owner');
    for (const id of ids) {
      expect(await store.touch(id, 'owner')).toBeGreaterThan(Date.now() + 50_000);
      expect(await store.touch(id, 'someone-else')).toBeNull();
    }
    // A deadline in the past: lapsed, refused, and claimed by the reaper exactly once.
    await redis.zadd(heartbeatKeysOf(ids[3]!).deadlines, Date.now() - 1_000, ids[3]!);
    expect(await store.touch(ids[3]!, 'owner')).toBeNull();
    const first = await store.claimDue(100, 60_000);
    expect(first.claims.map((c) => c.id)).toEqual([ids[3]]);
    expect(first.lostBuckets).toBe(0);
    expect((await store.claimDue(100, 60_000)).claims).toEqual([]);
  });

  it('claims due tunnels across all buckets, up to the limit per pass', async () => {
    await deleteKeysUnderPrefix(redis, prefix);
    const store = new HeartbeatStore(redis, { ttlSeconds: 60 });
    await store.rebuildIfLost(rows([]), 0);
    const ids = idPerBucket();
    for (const id of ids) await store.scheduleEnd(id, 0);
    const firstPass = await store.claimDue(10, 60_000);
    expect(firstPass.claims).toHaveLength(10);
    const secondPass = await store.claimDue(10, 60_000);
    expect([...firstPass.claims, ...secondPass.claims].map((c) => c.id).sort()).toEqual([...ids].sort());
  });

  it('holds its locks for a short lease, renewed while the rebuild runs, and releases them', async () => {
    await deleteKeysUnderPrefix(redis, prefix);
    const lock = HEARTBEAT_BUCKET_KEYS[0]!.rebuildLock;
    const store = new HeartbeatStore(redis, { ttlSeconds: 60, rebuildLockMs: 300 });
    let pttlAtStart = 0;
    let pttlLater = 0;
    const outcome = await store.rebuildIfLost(rows([{ id: 'a', ownerId: 'u' }], async () => {
      pttlAtStart = await redis.pttl(lock);
      // Three leases later the lock is still there: its holder renewed it.
      await new Promise((r) => setTimeout(r, 900));
      pttlLater = await redis.pttl(lock);
    }), 0);
    expect(outcome).toBe('rebuilt');
    expect(pttlAtStart).toBeGreaterThan(0);
    expect(pttlAtStart).toBeLessThanOrEqual(300);
    expect(pttlLater).toBeGreaterThan(0);
    expect(await redis.exists(lock)).toBe(0);
    expect(await store.hasEpoch()).toBe(true);
  });

  it('does not mark the key space complete when it was flushed during the rebuild', async () => {
    await deleteKeysUnderPrefix(redis, prefix);
    const store = new HeartbeatStore(redis, { ttlSeconds: 60, rebuildLockMs: 5_000 });
    const outcome = await store.rebuildIfLost(rows([{ id: 'a', ownerId: 'u' }], async () => {
      await deleteKeysUnderPrefix(redis, prefix);
    }), 0);
    // What was restored before the flush is gone with it: the next sweep must rebuild again.
    expect(outcome).toBe('busy');
    expect(await store.hasEpoch()).toBe(false);
    expect(await store.rebuildIfLost(rows([{ id: 'a', ownerId: 'u' }]), 0)).toBe('rebuilt');
    expect(await store.touch('a', 'u')).toEqual(expect.any(Number));
  });

  it('notices a bucket that lost its state on its own: its heartbeats answer retry, the others go on, and only it is rebuilt', async () => {
    await deleteKeysUnderPrefix(redis, prefix);
    const store = new HeartbeatStore(redis, { ttlSeconds: 60 });
    const ids = idPerBucket();
    const entries = ids.map((id) => ({ id, ownerId: 'owner' }));
    expect(await store.rebuildIfLost(rows(entries), 0)).toBe('rebuilt');
    // One bucket forgets everything (as one cluster node restarted without persistence would).
    const lost = HEARTBEAT_BUCKET_KEYS[5]!;
    await redis.del(lost.owners, lost.deadlines, lost.epoch);
    await expect(store.touch(ids[5]!, 'owner')).rejects.toThrow(/rebuilt/);
    expect(await store.touch(ids[6]!, 'owner')).toEqual(expect.any(Number));
    // Nothing in it is claimed meanwhile.
    await redis.zadd(lost.deadlines, 0, ids[5]!);
    expect(await store.claimDue(100, 60_000)).toEqual({ claims: [], lostBuckets: 1 });
    await redis.zrem(lost.deadlines, ids[5]!);
    // The rebuild restores that bucket's tunnels only.
    const before = await store.deadlines(ids);
    expect(await store.rebuildIfLost(rows(entries), 0)).toBe('rebuilt');
    const after = await store.deadlines(ids);
    expect(after.filter((deadline, i) => i !== 5 && deadline !== before[i])).toEqual([]);
    expect(after[5]).toEqual(expect.any(Number));
    expect(await store.touch(ids[5]!, 'owner')).toEqual(expect.any(Number));
  });
});
