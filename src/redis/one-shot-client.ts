import type { ConnectionOptions } from 'node:tls';
import { Redis } from 'ioredis';

/**
 * Runs `fn` with a client that connects once (no retries, no reconnects, 1 s to connect) and is
 * closed whatever happens: probes of a server that may not be there (yet, or any more).
 */
export async function withOneShotRedis<T>(target: string | { host: string; port: number; tls?: ConnectionOptions }, fn: (redis: Redis) => Promise<T>): Promise<T> {
  const options = { lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 0, retryStrategy: () => null };
  const redis = typeof target === 'string' ? new Redis(target, options) : new Redis({ ...target, ...options });
  redis.on('error', () => {});
  try {
    await redis.connect();
    return await fn(redis);
  } finally {
    redis.disconnect();
  }
}
