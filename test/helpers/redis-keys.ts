import { randomUUID } from 'node:crypto';
import { Cluster, Redis } from 'ioredis';
import { expect, it } from 'vitest';
import { createRedisClient } from '../../src/plugins/redis.js';
import type { RedisClient } from '../../src/redis/redis-client.js';
import { testRedisClusterNodes, testRedisUrl } from './test-services.js';

/** The run's Redis (test/helpers/test-services.ts), db 0: every test file works under its own key prefix there. */
export const REDIS_URL = testRedisUrl();

/** The run's 3-primary Redis Cluster, as REDIS_CLUSTER_NODES. */
export const REDIS_CLUSTER_NODES = testRedisClusterNodes();

/** The two shapes of Redis the Redis-facing tests run on. */
export const REDIS_TOPOLOGIES = ['single', 'cluster'] as const;
export type RedisTopology = (typeof REDIS_TOPOLOGIES)[number];

// Each test file has its own module registry, so this is per file: 'single' unless the file
// is one of test/redis-cluster/*, which reruns another file's tests on the cluster.
let fileTopology: RedisTopology = 'single';
/** How many brokers and clients this file put on each topology (redisEnv, testRedisClient). */
const placed: Record<RedisTopology, number> = { single: 0, cluster: 0 };

/** What this file put on each topology so far: a rerun on the cluster checks that nothing went elsewhere. */
export function redisPlacements(): Record<RedisTopology, number> {
  return { ...placed };
}

/** Makes this file's brokers and clients use the run's Redis of `topology` unless told otherwise. */
export function useRedisTopologyForFile(topology: RedisTopology): void {
  fileTopology = topology;
}

export function fileRedisTopology(): RedisTopology {
  return fileTopology;
}

/**
 * For a file of test/redis-cluster/: a last test that fails if any broker or client of the
 * file's tests went to the single node instead of the cluster.
 */
export function expectEverythingOnTheCluster(): void {
  it('ran every broker and Redis client of those tests on the cluster', () => {
    expect(redisPlacements()).toMatchObject({ single: 0 });
    expect(redisPlacements().cluster).toBeGreaterThan(0);
  });
}

/** The environment that puts a broker on the run's Redis of this topology. */
export function redisEnv(topology: RedisTopology = fileTopology): Record<string, string> {
  placed[topology]++;
  return topology === 'cluster' ? { REDIS_CLUSTER_NODES } : { REDIS_URL };
}

/** A client of the run's Redis of this topology, under `keyPrefix`, the way the broker makes one. */
export function testRedisClient(topology: RedisTopology = fileTopology, keyPrefix = ''): RedisClient {
  placed[topology]++;
  const nodes = REDIS_CLUSTER_NODES.split(',').map((n) => ({ host: n.slice(0, n.lastIndexOf(':')), port: Number(n.slice(n.lastIndexOf(':') + 1)) }));
  const client = topology === 'cluster'
    ? createRedisClient({ url: REDIS_URL, keyPrefix, cluster: { nodes, tls: false, username: undefined, password: undefined } }, { enableOfflineQueue: true })
    : createRedisClient({ url: REDIS_URL, keyPrefix });
  client.on('error', () => {});
  return client;
}

/** What every test prefix starts with, so leftovers are easy to find: `redis-cli --scan --pattern 'test:*'`. */
export const TEST_KEY_NAMESPACE = 'test:';

/** The prefixes this test file made (each file has its own module registry). */
const minted = new Set<string>();

/**
 * A fresh key prefix, `test:<uuid>:` (or `test:<label>:<uuid>:`). Every key under it is
 * deleted when the test file ends (test/helpers/cleanup-hooks.ts), whatever the tests did.
 */
export function testKeyPrefix(label?: string): string {
  const prefix = `${TEST_KEY_NAMESPACE}${label ? `${label}:` : ''}${randomUUID()}:`;
  minted.add(prefix);
  return prefix;
}

/**
 * Deletes every key under `prefix` (SCAN + UNLINK), bounded to `maxRounds` SCAN calls, and
 * returns how many it deleted. `prefix` is the whole prefix as stored in Redis; `redis` may
 * have a keyPrefix of its own as long as `prefix` starts with it (ioredis prefixes the keys
 * it is given, never a SCAN pattern).
 */
export async function deleteKeysUnderPrefix(redis: RedisClient, prefix: string, maxRounds = 100_000): Promise<number> {
  if (prefix.length < 4) throw new Error(`refusing to delete keys under the short prefix ${JSON.stringify(prefix)}`);
  const clientPrefix = redis.options.keyPrefix ?? '';
  if (!prefix.startsWith(clientPrefix)) throw new Error(`the client's keyPrefix ${JSON.stringify(clientPrefix)} is not a prefix of ${JSON.stringify(prefix)}`);
  let deleted = 0;
  // On a cluster each primary is scanned on its own; its node clients carry no keyPrefix, and
  // one UNLINK per key keeps every command within one slot.
  for (const node of primaries(redis)) {
    await scanKeys(node, prefix, maxRounds, async (keys) => {
      if (node === redis) deleted += await redis.unlink(...keys.map((k) => k.slice(clientPrefix.length)));
      else for (const key of keys) deleted += await node.unlink(key);
    });
  }
  return deleted;
}

/** How many keys are under `prefix` (as stored in Redis). */
export async function countKeysUnderPrefix(redis: RedisClient, prefix: string, maxRounds = 100_000): Promise<number> {
  let count = 0;
  for (const node of primaries(redis)) {
    await scanKeys(node, prefix, maxRounds, async (keys) => {
      count += keys.length;
    });
  }
  return count;
}

function primaries(redis: RedisClient): Redis[] {
  return redis instanceof Cluster ? redis.nodes('master') : [redis];
}

/**
 * Deletes the keys of every prefix this file made with testKeyPrefix(), then checks that
 * none holds a key any more: a key written after its test file's clean-up (a process left
 * running) fails the file rather than stay behind unnoticed.
 */
export async function cleanUpTestKeyPrefixes(): Promise<void> {
  if (minted.size === 0) return;
  // A prefix may have been used on either topology: both are cleaned.
  const clients = REDIS_TOPOLOGIES.map((topology) => testRedisClient(topology));
  try {
    await Promise.all(clients.map((c) => c.connect()));
    const remaining: string[] = [];
    for (const prefix of minted) {
      let left = 0;
      for (const redis of clients) {
        await deleteKeysUnderPrefix(redis, prefix);
        left += await countKeysUnderPrefix(redis, prefix);
      }
      if (left > 0) remaining.push(`${prefix} (${left})`);
      else minted.delete(prefix);
    }
    if (remaining.length > 0) throw new Error(`keys were written under these prefixes after they were cleaned up: ${remaining.join(', ')}`);
  } finally {
    for (const c of clients) c.disconnect();
  }
}

async function scanKeys(redis: Redis, prefix: string, maxRounds: number, onKeys: (keys: string[]) => Promise<void>): Promise<void> {
  // The prefix is matched literally: glob characters in it are escaped.
  const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
  let cursor = '0';
  for (let round = 0; round < maxRounds; round++) {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    if (keys.length > 0) await onKeys(keys);
    cursor = next;
    if (cursor === '0') return;
  }
  throw new Error(`SCAN of ${prefix}* did not finish within ${maxRounds} rounds`);
}
