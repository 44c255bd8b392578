import type { Logger } from '../logging/logger.js';
import type { RedisClient } from './redis-client.js';

/** How long after ioredis gives a client up for good it is started again. */
export const REDIS_RESTART_DELAY_MS = 1_000;

/**
 * ioredis ends a client for good (status `end`: every command then fails with "Connection is
 * closed.") in some races that are no decision of the broker's. One: a Sentinel failover
 * noticed while a reconnect is still asking the sentinels for the primary (ioredis 5's
 * SentinelConnector throws when its connect is cut short, and Redis.connect then ends the
 * client instead of retrying). A broker whose client ended would answer 503 until restarted,
 * so the client is started again, every REDIS_RESTART_DELAY_MS while it stays ended, until
 * the returned stop function is called (shutdown).
 */
export function keepRedisConnected(redis: RedisClient, log: Logger, delayMs = REDIS_RESTART_DELAY_MS): () => void {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const onEnd = () => {
    if (stopped || timer) return;
    log.warn({ event: 'redis.ended' }, 'the Redis client gave its connection up; starting it again');
    timer = setTimeout(() => {
      timer = undefined;
      // A failed connect ends the client again, which brings us back here.
      if (!stopped) redis.connect().catch(() => {});
    }, delayMs);
    timer.unref();
  };
  redis.on('end', onEnd);
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    timer = undefined;
    redis.off('end', onEnd);
  };
}
