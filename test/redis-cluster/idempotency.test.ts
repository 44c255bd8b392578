/** Idempotency-Key, on the run's 3-primary Redis Cluster: test/tunnels/idempotency.test.ts's tests, rerun here. */
import { expectEverythingOnTheCluster, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../tunnels/idempotency.test.js');

expectEverythingOnTheCluster();
