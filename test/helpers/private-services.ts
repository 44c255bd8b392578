import { runMigrations } from '../../src/db/migrate.js';
import { EmbeddedPostgres } from '../../src/dev-services/embedded-postgres.js';
import { PrivateRedis as RedisServer } from '../../src/dev-services/private-redis.js';
import { startTestBroker, type TestBroker, type TestBrokerOptions } from './broker.js';
import { trackService } from './process.js';
import { tempDir } from './temp-dir.js';

/**
 * Private PostgreSQL and Redis servers on their own loopback ports, for tests that stop
 * and restart them. The shared servers stay untouched, so other test files keep running.
 */

export interface PrivateRedis {
  url: string;
  port: number;
  start(): Promise<void>;
  /** Stops it; it comes back empty (no persistence), like a restarted production Redis without AOF. */
  stop(): Promise<void>;
  close(): Promise<void>;
}

/** The broker's own private redis-server (src/dev-services), on a port it keeps across restarts. */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  const redis = new RedisServer({ dir: tempDir('private-redis') });
  const first = await redis.start();
  const close = () => redis.stop();
  trackService(close);
  return {
    url: first.url,
    port: first.port,
    start: async () => {
      await redis.start();
    },
    stop: () => redis.stop(),
    close,
  };
}

export interface PrivatePostgres {
  port: number;
  url(database?: string): string;
  start(): Promise<void>;
  /** Stops it as a crash would (immediate shutdown); start() brings it back on the same port. */
  stop(): Promise<void>;
  close(): Promise<void>;
}

/** The broker's own embedded PostgreSQL (src/dev-services) in a throwaway folder. */
export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const postgres = new EmbeddedPostgres({ dir: tempDir('private-postgres'), durable: false });
  const close = () => postgres.stop();
  // Registered before the first start, so a start that fails still has its folder removed.
  trackService(close);
  const first = await postgres.start();
  return {
    port: first.port,
    url: first.url,
    start: async () => {
      await postgres.start();
    },
    stop: () => postgres.crash(),
    close,
  };
}

/**
 * A test broker whose database lives on a private PostgreSQL server, migrated, so a test can
 * stop and restart that server under it. Close the broker before the server.
 */
export async function startBrokerOnPrivatePostgres(options: Omit<TestBrokerOptions, 'db'> = {}): Promise<{ postgres: PrivatePostgres; broker: TestBroker }> {
  const postgres = await startPrivatePostgres();
  const url = postgres.url('broker');
  await runMigrations({ databaseUrl: url });
  const broker = await startTestBroker({ ...options, db: { url, name: 'broker', drop: async () => {} } });
  return { postgres, broker };
}
