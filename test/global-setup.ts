import type { TestProject } from 'vitest/node';
import { startTestServices } from './helpers/test-services.js';

/**
 * Once per `npm test`: starts the embedded PostgreSQL, the private redis-server and the
 * 3-primary Redis Cluster every file shares (or takes TEST_DATABASE_URL / TEST_REDIS_URL /
 * TEST_REDIS_CLUSTER_NODES), and stops them at the end.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const services = await startTestServices(process.env);
  process.stdout.write(`test services: ${services.describe}\n`);
  project.provide('testDatabaseServerUrl', services.databaseServerUrl);
  project.provide('testRedisUrl', services.redisUrl);
  project.provide('testRedisClusterNodes', services.redisClusterNodes);
  return () => services.stop();
}
