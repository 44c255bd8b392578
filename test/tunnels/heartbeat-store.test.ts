import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeartbeatStore, type RestoreEntry } from '../../src/tunnels/heartbeat-store.js';
import { deleteKeysUnderPrefix, REDIS_URL, testKeyPrefix } from '../helpers/redis-keys.js';

const prefix = testKeyPrefix('heartbeat-store');
let redis: Redis;
beforeAll(() => {
  redis = new Redis(REDIS_URL, { keyPrefix: prefix, maxRetriesPerRequest: 1 });
});
afterAll(async () => {
  await deleteKeysUnderPrefix(redis, prefix);
  redis.disconnect();
});

const LOCK = 'epoch:rebuild-lock';

/** Rows to restore, one page; `during` runs between reading them and restoring them. */
function rows(entries: RestoreEntry[], during?: () => Promise<void>): () => AsyncIterable<RestoreEntry[]> {
  return async function* load() {
    await during?.();
    yield entries;
  };
}

describe('HeartbeatStore.rebuildIfLost', () => {
  it('holds its lock for a short lease, renewed while the rebuild runs, and releases it', async () => {
    await deleteKeysUnderPrefix(redis, prefix);
    const store = new HeartbeatStore(redis, { ttlSeconds: 60, rebuildLockMs: 300 });
    let pttlAtStart = 0;
    let pttlLater = 0;
    const outcome = await store.rebuildIfLost(rows([{ id: 'a', ownerId: 'u' }], async () => {
      pttlAtStart = await redis.pttl(LOCK);
      // Three leases later the lock is still there: its holder renewed it.
      await new Promise((r) => setTimeout(r, 900));
      pttlLater = await redis.pttl(LOCK);
    }), 0);
    expect(outcome).toBe('rebuilt');
    expect(pttlAtStart).toBeGreaterThan(0);
    expect(pttlAtStart).toBeLessThanOrEqual(300);
    expect(pttlLater).toBeGreaterThan(0);
    expect(await redis.exists(LOCK)).toBe(0);
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
});
