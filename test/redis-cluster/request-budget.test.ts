/** the shared Cloudflare request budget, on the run's 3-primary Redis Cluster: test/cloudflare/request-budget.test.ts's tests, rerun here. */
import { expect, it } from 'vitest';
import { redisPlacements, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../cloudflare/request-budget.test.js');

it('ran every broker and Redis client of those tests on the cluster', () => {
  expect(redisPlacements()).toMatchObject({ single: 0, cluster: expect.any(Number) });
  expect(redisPlacements().cluster).toBeGreaterThan(0);
});
