/** Two broker instances, on the run's 3-primary Redis Cluster: test/resilience/two-instances.test.ts's tests, rerun here. */
import { expectEverythingOnTheCluster, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../resilience/two-instances.test.js');

expectEverythingOnTheCluster();
