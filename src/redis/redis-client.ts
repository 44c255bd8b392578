import type { Cluster, Redis } from 'ioredis';

/**
 * The broker's Redis connection: one node (optionally found through Sentinel) or a Redis
 * Cluster. Code that uses it keeps to what both offer: commands and scripts whose keys all
 * share one hash slot (see src/tunnels/heartbeat-keys.ts).
 */
export type RedisClient = Redis | Cluster;
