/** Two Cloudflare accounts (placement, capacity, per-account budgets), on the run's 3-primary Redis Cluster: test/tunnels/cloudflare-accounts.test.ts's tests, rerun here. */
import { expect, it } from 'vitest';
import { redisPlacements, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../tunnels/cloudflare-accounts.test.js');

it('ran every broker and Redis client of those tests on the cluster', () => {
  expect(redisPlacements()).toMatchObject({ single: 0, cluster: expect.any(Number) });
  expect(redisPlacements().cluster).toBeGreaterThan(0);
});
