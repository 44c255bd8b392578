/** The reconciler and its Redis lock (one holder, renewed lease, compare-and-delete), on the run's 3-primary Redis Cluster: test/reconcile/reconciler.test.ts's tests, rerun here. */
import { expectEverythingOnTheCluster, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../reconcile/reconciler.test.js');

expectEverythingOnTheCluster();
