/** Heartbeats, creates and deletes, on the run's 3-primary Redis Cluster: test/tunnels/tunnel-lifecycle.test.ts's tests, rerun here. */
import { expectEverythingOnTheCluster, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../tunnels/tunnel-lifecycle.test.js');

expectEverythingOnTheCluster();
