/** The broker under a spent Cloudflare budget, on the run's 3-primary Redis Cluster: test/tunnels/cloudflare-budget.test.ts's tests, rerun here. */
import { expectEverythingOnTheCluster, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../tunnels/cloudflare-budget.test.js');

expectEverythingOnTheCluster();
