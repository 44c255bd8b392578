/** The reconciler and its Redis lock (one holder, renewed lease, compare-and-delete), on the run's 3-primary Redis Cluster: test/reconcile/reconciler.test.ts's tests, rerun here. */
import { expect, it } from 'vitest';
import { redisPlacements, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../reconcile/reconciler.test.js');

it('ran every broker and Redis client of those tests on the cluster', () => {
  expect(redisPlacements()).toMatchObject({ single: 0, cluster: expect.any(Number) });
  expect(redisPlacements().cluster).toBeGreaterThan(0);
});
