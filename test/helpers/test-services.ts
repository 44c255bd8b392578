import { rmSync } from 'node:fs';
import { inject } from 'vitest';
import { EmbeddedPostgres } from '../../src/dev-services/embedded-postgres.js';
import { PrivateRedis } from '../../src/dev-services/private-redis.js';
import { PrivateRedisCluster } from './redis-cluster.js';
import { makeTempDir } from './temp-dir.js';

/**
 * The PostgreSQL server and the Redis every test file uses: one embedded PostgreSQL and one
 * private redis-server per `npm test` run (test/global-setup.ts starts them), or the ones in
 * TEST_DATABASE_URL and TEST_REDIS_URL. Files share the servers and never each other's data:
 * each makes its own databases (createTestDatabase) and Redis key prefix (testKeyPrefix).
 */
export interface TestServices {
  /** A URL of the server's `postgres` database, for admin work; createTestDatabase() gives a file its own. */
  databaseServerUrl: string;
  redisUrl: string;
  /** REDIS_CLUSTER_NODES of a 3-primary Redis Cluster, for the tests that run on both topologies. */
  redisClusterNodes: string;
  describe: string;
  stop(): Promise<void>;
}

declare module 'vitest' {
  export interface ProvidedContext {
    testDatabaseServerUrl: string;
    testRedisUrl: string;
    testRedisClusterNodes: string;
  }
}

export async function startTestServices(env: Record<string, string | undefined>): Promise<TestServices> {
  const dir = makeTempDir('test-services');
  const stops: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const fn of stops.splice(0).reverse()) await fn().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    let databaseServerUrl = env.TEST_DATABASE_URL;
    const parts: string[] = [];
    if (databaseServerUrl === undefined) {
      const postgres = new EmbeddedPostgres({ dir, durable: false });
      const running = await postgres.start();
      stops.push(() => postgres.stop());
      databaseServerUrl = running.url();
      parts.push(`embedded PostgreSQL ${running.version} on port ${running.port}`);
    } else {
      parts.push('PostgreSQL from TEST_DATABASE_URL');
    }
    let redisUrl = env.TEST_REDIS_URL;
    if (redisUrl === undefined) {
      const redis = new PrivateRedis({ dir });
      const running = await redis.start();
      stops.push(() => redis.stop());
      redisUrl = running.url;
      parts.push(`private redis-server ${running.version} on port ${running.port}`);
    } else {
      parts.push('Redis from TEST_REDIS_URL');
    }
    let redisClusterNodes = env.TEST_REDIS_CLUSTER_NODES;
    if (redisClusterNodes === undefined) {
      const cluster = new PrivateRedisCluster({ dir });
      const nodes = await cluster.start();
      stops.push(() => cluster.stop());
      redisClusterNodes = cluster.nodesEnv;
      parts.push(`a Redis Cluster of ${nodes.length} primaries on ports ${nodes.map((n) => n.port).join(',')}`);
    } else {
      parts.push('Redis Cluster from TEST_REDIS_CLUSTER_NODES');
    }
    return { databaseServerUrl, redisUrl, redisClusterNodes, describe: parts.join(', '), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** The run's PostgreSQL server (its `postgres` database). */
export function testDatabaseServerUrl(): string {
  return provided('testDatabaseServerUrl', 'TEST_DATABASE_URL');
}

/** The run's Redis. */
export function testRedisUrl(): string {
  return provided('testRedisUrl', 'TEST_REDIS_URL');
}

/** The run's Redis Cluster, as REDIS_CLUSTER_NODES. */
export function testRedisClusterNodes(): string {
  return provided('testRedisClusterNodes', 'TEST_REDIS_CLUSTER_NODES');
}

// Inside vitest, what test/global-setup.ts provided. Outside (`npm run soak`), the script
// starts the services itself and passes them in its environment.
function provided(key: 'testDatabaseServerUrl' | 'testRedisUrl' | 'testRedisClusterNodes', envName: string): string {
  let value: string | undefined;
  try {
    value = inject(key);
  } catch {
    value = process.env[envName];
  }
  if (!value) throw new Error(`no ${key}: run under vitest (test/global-setup.ts provides it) or set ${envName}`);
  return value;
}
