/** The per-user rate limits, on the run's 3-primary Redis Cluster: test/tunnels/rate-limit.test.ts's tests, rerun here. */
import { expectEverythingOnTheCluster, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../tunnels/rate-limit.test.js');

expectEverythingOnTheCluster();
