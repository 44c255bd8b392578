/**
 * The model-based test (fast-check commands against real broker processes, with kills, Redis
 * flushes and Cloudflare faults; test/model/tunnel-model.test.ts) rerun with every broker on the
 * run's 3-primary Redis Cluster. Replay a failure with `npm run soak -- --redis cluster --seed ...`.
 */
import { expectEverythingOnTheCluster, useRedisTopologyForFile } from '../helpers/redis-keys.js';

useRedisTopologyForFile('cluster');
await import('../model/tunnel-model.test.js');

expectEverythingOnTheCluster();
