/** Heartbeat tokens, on the run's 3-primary Redis Cluster: test/tunnels/heartbeat-token.test.ts's tests, rerun here. */
import { expectEverythingOnTheCluster, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../tunnels/heartbeat-token.test.js');

expectEverythingOnTheCluster();
