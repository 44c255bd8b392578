import type { Logger } from 'pino';
import type { BootConfig, Config } from '../config/env.js';
import { withDatabase } from '../db/migrate.js';
import { redactUrl } from '../logging/redact-url.js';
import { describeRedisTarget } from '../plugins/redis.js';

/** The database the broker uses on the embedded server. */
export const EMBEDDED_DATABASE_NAME = 'tunnel_broker';

/** Where each store comes from, as the start-up log and `doctor` say it. */
export interface ServicesDescription {
  postgres: { source: 'given'; url: string } | { source: 'embedded'; version: string; port: number; dataDir: string; reused: boolean };
  redis: { source: 'given'; url: string } | { source: 'private'; version: string; port: number; dataDir: string; reused: boolean } | { source: 'unused' };
}

/** Which stores the caller uses: `db migrate` needs no Redis. */
export interface ServiceNeeds {
  redis: boolean;
}

export interface StartedServices {
  /** With `redis: false`, redis.url is whatever was given (maybe unset); do not connect to it. */
  config: Config;
  description: ServicesDescription;
  /** Stops what this call started (not what it found running, nor what was given). Idempotent. */
  stop(): Promise<void>;
}

/**
 * Resolves the stores a boot config names: DATABASE_URL and REDIS_URL as given, or, outside
 * production when one is not set, an embedded PostgreSQL and a private redis-server with
 * their data in DEV_DATA_DIR. `npm start`, `npm run db:migrate` and the CLI all come
 * through here, so they agree on where the data is.
 */
export async function startServices(boot: BootConfig, needs: ServiceNeeds = { redis: true }): Promise<StartedServices> {
  const stops: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const fn of stops.splice(0).reverse()) await fn();
  };
  try {
    // Redis first: a missing redis-server is the likelier failure, and it fails at once.
    let redisUrl = boot.redis.url;
    let redis: ServicesDescription['redis'];
    if (!needs.redis) {
      redis = { source: 'unused' };
    } else if (redisUrl === undefined) {
      // Loaded only when used: a production broker is given both stores and never runs these.
      const { PrivateRedis } = await import('./private-redis.js');
      const privateRedis = new PrivateRedis({ dir: boot.devServices.dataDir });
      const running = await privateRedis.start();
      stops.push(() => privateRedis.stop());
      redisUrl = running.url;
      redis = { source: 'private', version: running.version, port: running.port, dataDir: privateRedis.location, reused: running.reused };
    } else {
      redis = { source: 'given', url: describeRedisTarget({ ...boot.redis, url: redisUrl }) };
    }

    let databaseUrl = boot.databaseUrl;
    let postgres: ServicesDescription['postgres'];
    if (databaseUrl === undefined) {
      const { EmbeddedPostgres } = await import('./embedded-postgres.js');
      const embedded = new EmbeddedPostgres({ dir: boot.devServices.dataDir });
      const running = await embedded.start();
      stops.push(() => embedded.stop());
      databaseUrl = withDatabase(running.url(), EMBEDDED_DATABASE_NAME);
      postgres = { source: 'embedded', version: running.version, port: running.port, dataDir: embedded.location, reused: running.reused };
    } else {
      postgres = { source: 'given', url: redactUrl(databaseUrl) };
    }

    const config: Config = { ...boot, databaseUrl, redis: { ...boot.redis, url: redisUrl ?? '' } };
    return { config, description: { postgres, redis }, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** One line each for PostgreSQL and Redis: which one, and where its data lives. */
export function logServices(logger: Pick<Logger, 'info'>, description: ServicesDescription): void {
  const { postgres, redis } = description;
  logger.info(
    { postgres },
    postgres.source === 'given'
      ? `PostgreSQL: the server in DATABASE_URL (${postgres.url})`
      : `PostgreSQL: embedded PostgreSQL ${postgres.version} on 127.0.0.1:${postgres.port}${postgres.reused ? ' (already running)' : ''}, data in ${postgres.dataDir} (set DATABASE_URL to use your own server)`,
  );
  if (redis.source === 'unused') return;
  logger.info(
    { redis },
    redis.source === 'given'
      ? `Redis: the server in REDIS_URL (${redis.url})`
      : `Redis: private redis-server ${redis.version} on 127.0.0.1:${redis.port}${redis.reused ? ' (already running)' : ''}, files in ${redis.dataDir} (set REDIS_URL to use your own server)`,
  );
}
