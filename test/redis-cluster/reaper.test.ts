/** The reaper, on the run's 3-primary Redis Cluster: test/reaper/reaper.test.ts's tests, rerun here. */
import { expectEverythingOnTheCluster, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../reaper/reaper.test.js');

expectEverythingOnTheCluster();
