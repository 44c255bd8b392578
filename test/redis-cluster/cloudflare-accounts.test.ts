/** Two Cloudflare accounts (placement, capacity, per-account budgets), on the run's 3-primary Redis Cluster: test/tunnels/cloudflare-accounts.test.ts's tests, rerun here. */
import { expectEverythingOnTheCluster, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../tunnels/cloudflare-accounts.test.js');

expectEverythingOnTheCluster();
