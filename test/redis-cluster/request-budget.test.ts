/** The shared Cloudflare request budget, on the run's 3-primary Redis Cluster: test/cloudflare/request-budget.test.ts's tests, rerun here. */
import { expectEverythingOnTheCluster, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../cloudflare/request-budget.test.js');

expectEverythingOnTheCluster();
