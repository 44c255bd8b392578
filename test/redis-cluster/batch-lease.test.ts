/** Two reapers sharing batches, on the run's 3-primary Redis Cluster: test/reaper/batch-lease.test.ts's tests, rerun here. */
import { expectEverythingOnTheCluster, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../reaper/batch-lease.test.js');

expectEverythingOnTheCluster();
