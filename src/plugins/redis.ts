import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { RedisConfig } from '../config/env.js';
import { redactUrl } from '../logging/redact-url.js';
import { keepRedisConnected } from '../redis/keep-connected.js';
import type { RedisClient } from '../redis/redis-client.js';

declare module 'fastify' {
  interface FastifyInstance {
    redis: RedisClient;
  }
}

export type RedisPluginOptions = Pick<RedisConfig, 'url' | 'keyPrefix'> & Partial<Pick<RedisConfig, 'sentinel' | 'cluster'>>;

/** How often the client retries a lost connection (and, with sentinels, asks them for the primary again). */
const retryStrategy = (attempt: number) => Math.min(attempt * 200, 2_000);

/**
 * Every key the broker writes goes through this client's keyPrefix, so several
 * deployments (or test files) can share one Redis without seeing each other. With sentinels,
 * the client asks them for the primary, and again after a failover (when the old primary's
 * connection drops, or it answers READONLY); REDIS_URL then gives only credentials, database
 * and TLS.
 * With cluster nodes, an ioredis Cluster: it follows MOVED/ASK redirections and failovers by
 * itself; `overrides` then apply to each node's connection.
 */
export function createRedisClient(options: RedisPluginOptions & { cluster: NonNullable<RedisConfig['cluster']> }, overrides?: RedisOptions): Cluster;
export function createRedisClient(options: RedisPluginOptions & { cluster?: undefined }, overrides?: RedisOptions): Redis;
export function createRedisClient(options: RedisPluginOptions, overrides?: RedisOptions): RedisClient;
export function createRedisClient(options: RedisPluginOptions, overrides: RedisOptions = {}): RedisClient {
  const common: RedisOptions = {
    keyPrefix: options.keyPrefix,
    lazyConnect: true,
    // Fail a command quickly while Redis is away instead of queueing requests forever.
    maxRetriesPerRequest: 1,
    connectTimeout: 5_000,
    retryStrategy,
    // A node that answers READONLY was demoted (a failover): reconnect, which asks the
    // sentinels for the primary again, and resend the command.
    reconnectOnError: (error) => (/READONLY/.test(error.message) ? 2 : false),
    ...overrides,
  };
  if (options.cluster) return createClusterClient(options.cluster, common);
  if (!options.sentinel) return new Redis(options.url, common);
  const url = new URL(options.url);
  const tls = url.protocol === 'rediss:';
  const db = Number(url.pathname.slice(1) || 0);
  return new Redis({
    ...common,
    sentinels: options.sentinel.nodes,
    name: options.sentinel.name,
    sentinelPassword: options.sentinel.password,
    username: url.username ? decodeURIComponent(url.username) : undefined,
    password: url.password ? decodeURIComponent(url.password) : undefined,
    db: Number.isInteger(db) ? db : 0,
    ...(tls ? { tls: {}, sentinelTLS: {}, enableTLSForSentinelMode: true } : {}),
    sentinelRetryStrategy: retryStrategy,
    // No failover detector: a +switch-master that arrives while a reconnect is still asking
    // the sentinels cuts that connect short, and ioredis then ends the client for good (seen
    // as a flaky failover test). A killed primary closes the connection anyway, and a demoted
    // one answers READONLY (reconnectOnError above): both bring the client to the new primary.
  });
}

function createClusterClient(cluster: NonNullable<RedisConfig['cluster']>, common: RedisOptions): Cluster {
  const { keyPrefix, lazyConnect, enableOfflineQueue, retryStrategy: retry, reconnectOnError: _reconnect, sentinelRetryStrategy: _sentinel, failoverDetector: _detector, ...perNode } = common;
  return new Cluster(cluster.nodes, {
    keyPrefix,
    lazyConnect,
    // maxRetriesPerRequest does not bound a Cluster's offline queue: while it reconnects, a
    // queued command would wait for as long as the outage lasts. Refused at once instead
    // (503, retry), as a single node's client does after its one retry.
    enableOfflineQueue: enableOfflineQueue ?? false,
    clusterRetryStrategy: (attempt) => retry?.(attempt) ?? null,
    // Reads and writes go to primaries: a replica may lag behind a heartbeat just written.
    scaleReads: 'master',
    slotsRefreshTimeout: 2_000,
    redisOptions: {
      ...perNode,
      username: cluster.username,
      password: cluster.password,
      ...(cluster.tls ? { tls: {} } : {}),
    },
  });
}

/** Where the broker's Redis is, for logs and messages: never a password. */
export function describeRedisTarget(options: RedisPluginOptions): string {
  if (options.cluster) return `the Redis Cluster at ${options.cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',')}${options.cluster.tls ? ' (TLS)' : ''}`;
  if (!options.sentinel) return redactUrl(options.url);
  return `the primary "${options.sentinel.name}" of sentinels ${options.sentinel.nodes.map((n) => `${n.host}:${n.port}`).join(',')}`;
}

/** Connects at registration so a bad REDIS_URL fails boot; quits on close. */
export const redisPlugin = fp(
  async (app: FastifyInstance, options: RedisPluginOptions) => {
    const redis = createRedisClient(options);
    // ioredis emits 'error' on every failed reconnect; without a listener Node would crash.
    redis.on('error', (error) => app.log.warn({ err: error, event: 'redis.error' }, 'redis error'));
    try {
      await redis.connect();
      await redis.ping();
    } catch (error) {
      redis.disconnect();
      throw new Error(`Cannot reach Redis at ${describeRedisTarget(options)}: ${(error as Error).message}`, { cause: error });
    }
    app.decorate<RedisClient>('redis', redis);
    const stopKeeping = keepRedisConnected(redis, app.log);
    app.addHook('onClose', async () => {
      stopKeeping();
      await redis.quit().catch(() => redis.disconnect());
    });
  },
  { name: 'redis', fastify: '5.x' },
);

/** Redis is down, restarting or unreachable: the request may succeed if retried. */
export function isRedisUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error.name === 'MaxRetriesPerRequestError') return true;
  const code = (error as { code?: string }).code;
  if (code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'ETIMEDOUT' || code === 'EPIPE') return true;
  if (error.name === 'ClusterAllFailedError') return true;
  return /Connection is closed|Stream isn't writeable|LOADING|MASTERDOWN|READONLY|CLUSTERDOWN|TRYAGAIN|None of startup nodes is available|Failed to refresh slots cache|Cluster isn't ready/.test(error.message);
}
