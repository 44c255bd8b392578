import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisClient, describeRedisTarget, isRedisUnavailable } from '../../src/plugins/redis.js';
import { trackService } from '../helpers/process.js';
import { PrivateRedisCluster } from '../helpers/redis-cluster.js';
import { testKeyPrefix } from '../helpers/redis-keys.js';
import { tempDir } from '../helpers/temp-dir.js';

const cluster = new PrivateRedisCluster({ dir: tempDir('cluster-client') });
beforeAll(async () => {
  trackService(() => cluster.stop());
  await cluster.start();
});
afterAll(() => cluster.stop());

const options = () => ({ url: 'redis://unused', keyPrefix: testKeyPrefix('cluster-client'), cluster: { nodes: [...cluster.nodes], tls: false, username: undefined, password: undefined } });

describe('the broker\'s Redis Cluster client', () => {
  it('reaches keys in every slot through one client and names the cluster without credentials', async () => {
    const redis = createRedisClient({ ...options(), cluster: { ...options().cluster, username: 'broker', password: 'hunter2' } });
    expect(describeRedisTarget({ ...options(), cluster: { ...options().cluster, password: 'hunter2' } })).not.toContain('hunter2');
    redis.disconnect();
    const plain = createRedisClient(options());
    plain.on('error', () => {});
    await plain.connect();
    try {
      for (let i = 0; i < 30; i++) await plain.set(`key-${i}`, String(i), 'EX', 60);
      const values = await Promise.all(Array.from({ length: 30 }, (_, i) => plain.get(`key-${i}`)));
      expect(values).toEqual(Array.from({ length: 30 }, (_, i) => String(i)));
      const held = await Promise.all(plain.nodes('master').map(async (node) => (await node.keys(`${options().keyPrefix.split(':').slice(0, 2).join(':')}*`)).length));
      // The keys are spread over the primaries, not all on one.
      expect(held.filter((n) => n > 0).length).toBeGreaterThan(1);
    } finally {
      plain.disconnect();
    }
  });

  it('fails a command after it was closed as "Redis unavailable" (a 503), not as an internal error', async () => {
    const redis = createRedisClient(options());
    redis.on('error', () => {});
    await redis.connect();
    await redis.quit();
    const error = await redis.get('x').then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect(isRedisUnavailable(error)).toBe(true);
  });

  it('refuses commands at once while no node answers, instead of queueing them for the length of the outage', async () => {
    const outage = new PrivateRedisCluster({ dir: tempDir('cluster-outage') });
    trackService(() => outage.stop());
    const nodes = await outage.start();
    const redis = createRedisClient({ ...options(), cluster: { ...options().cluster, nodes: [...nodes] } });
    redis.on('error', () => {});
    await redis.connect();
    try {
      await redis.set('before', '1', 'EX', 60);
      await outage.stop();
      const started = Date.now();
      const errors: unknown[] = [];
      // Each command either fails fast or (before the client notices the outage) on its connection's close.
      for (let i = 0; i < 5; i++) errors.push(await redis.get('during').then(() => undefined, (e: unknown) => e));
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(errors.every((e) => isRedisUnavailable(e))).toBe(true);
    } finally {
      redis.disconnect();
    }
  });
});
