import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { Redis } from 'ioredis';
import { redactUrl } from '../logging/redact-url.js';

declare module 'fastify' {
  interface FastifyInstance {
    redis: Redis;
  }
}

export interface RedisPluginOptions {
  url: string;
  keyPrefix: string;
}

/**
 * Every key the broker writes goes through this client's keyPrefix, so several
 * deployments (or test files) can share one Redis without seeing each other.
 */
export function createRedisClient(options: RedisPluginOptions): Redis {
  return new Redis(options.url, {
    keyPrefix: options.keyPrefix,
    lazyConnect: true,
    // Fail a command quickly while Redis is away instead of queueing requests forever.
    maxRetriesPerRequest: 1,
    connectTimeout: 5_000,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
  });
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
      throw new Error(`Cannot reach Redis at ${redactUrl(options.url)}: ${(error as Error).message}`, { cause: error });
    }
    app.decorate('redis', redis);
    app.addHook('onClose', async () => {
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
  return /Connection is closed|Stream isn't writeable|LOADING|MASTERDOWN|READONLY/.test(error.message);
}
