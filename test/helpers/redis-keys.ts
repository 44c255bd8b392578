import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { testRedisUrl } from './test-services.js';

/** The run's Redis (test/helpers/test-services.ts), db 0: every test file works under its own key prefix there. */
export const REDIS_URL = testRedisUrl();

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
export async function deleteKeysUnderPrefix(redis: Redis, prefix: string, maxRounds = 100_000): Promise<number> {
  if (prefix.length < 4) throw new Error(`refusing to delete keys under the short prefix ${JSON.stringify(prefix)}`);
  const clientPrefix = redis.options.keyPrefix ?? '';
  if (!prefix.startsWith(clientPrefix)) throw new Error(`the client's keyPrefix ${JSON.stringify(clientPrefix)} is not a prefix of ${JSON.stringify(prefix)}`);
  let deleted = 0;
  await scanKeys(redis, prefix, maxRounds, async (keys) => {
    deleted += await redis.unlink(...keys.map((k) => k.slice(clientPrefix.length)));
  });
  return deleted;
}

/** How many keys are under `prefix` (as stored in Redis). */
export async function countKeysUnderPrefix(redis: Redis, prefix: string, maxRounds = 100_000): Promise<number> {
  let count = 0;
  await scanKeys(redis, prefix, maxRounds, async (keys) => {
    count += keys.length;
  });
  return count;
}

/**
 * Deletes the keys of every prefix this file made with testKeyPrefix(), then checks that
 * none holds a key any more: a key written after its test file's clean-up (a process left
 * running) fails the file rather than stay behind unnoticed.
 */
export async function cleanUpTestKeyPrefixes(redisUrl = REDIS_URL): Promise<void> {
  if (minted.size === 0) return;
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1, lazyConnect: true });
  redis.on('error', () => {});
  try {
    await redis.connect();
    const remaining: string[] = [];
    for (const prefix of minted) {
      await deleteKeysUnderPrefix(redis, prefix);
      const left = await countKeysUnderPrefix(redis, prefix);
      if (left > 0) remaining.push(`${prefix} (${left})`);
      else minted.delete(prefix);
    }
    if (remaining.length > 0) throw new Error(`keys were written under these prefixes after they were cleaned up: ${remaining.join(', ')}`);
  } finally {
    redis.disconnect();
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
