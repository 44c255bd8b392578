import { statSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { loadBootConfig } from '../../src/config/env.js';
import { startServices, type StartedServices } from '../../src/dev-services/dev-services.js';
import { withClient } from '../helpers/database.js';
import { REDIS_URL } from '../helpers/redis-keys.js';
import { testDatabaseServerUrl } from '../helpers/test-services.js';
import { tempDir } from '../helpers/temp-dir.js';

const started: StartedServices[] = [];
afterAll(async () => {
  for (const services of started) await services.stop();
});


describe('startServices', () => {
  it('with neither URL, makes DEV_DATA_DIR and runs both stores in it (regression: the private Redis made the folder 0700 and initdb, as another OS user, could not enter it)', async () => {
    const dataDir = path.join(tempDir('dev-services'), 'fresh', '.data');
    const services = await startServices(loadBootConfig({ DEV_DATA_DIR: dataDir }));
    started.push(services);
    expect(services.description).toMatchObject({
      postgres: { source: 'embedded', dataDir: path.join(dataDir, 'postgres'), reused: false },
      redis: { source: 'private', dataDir: path.join(dataDir, 'redis'), reused: false },
    });
    expect(statSync(path.join(dataDir, 'redis')).mode & 0o777).toBe(0o700);
    // The broker's own database, created by the migration runner at start-up, is not there yet; the server is.
    expect(await withClient(services.config.databaseUrl.replace(/\/tunnel_broker$/, '/postgres'), async (c) => (await c.query('SELECT 1 AS one')).rows)).toEqual([{ one: 1 }]);
    const redis = new Redis(services.config.redis.url, { maxRetriesPerRequest: 0 });
    try {
      expect(await redis.ping()).toBe('PONG');
    } finally {
      redis.disconnect();
    }
    await services.stop();
    await expect(withClient(services.config.databaseUrl.replace(/\/tunnel_broker$/, '/postgres'), (c) => c.query('SELECT 1'))).rejects.toThrow();
  });

  it('uses DATABASE_URL and REDIS_URL as given, starts nothing, and logs them with the password masked', async () => {
    const databaseUrl = testDatabaseServerUrl().replace('postgres@', 'postgres:hunter2@');
    const dataDir = path.join(tempDir('dev-services'), '.data');
    const services = await startServices(loadBootConfig({ DATABASE_URL: databaseUrl, REDIS_URL, DEV_DATA_DIR: dataDir }));
    started.push(services);
    expect(services.config.databaseUrl).toBe(databaseUrl);
    expect(services.description.postgres).toEqual({ source: 'given', url: databaseUrl.replace('hunter2', '***') });
    expect(services.description.redis).toEqual({ source: 'given', url: REDIS_URL });
    expect(() => statSync(dataDir)).toThrow();
  });

  it('starts no Redis for a caller that needs none (db:migrate)', async () => {
    const dataDir = path.join(tempDir('dev-services'), '.data');
    const services = await startServices(loadBootConfig({ DEV_DATA_DIR: dataDir }), { redis: false });
    started.push(services);
    expect(services.description.redis).toEqual({ source: 'unused' });
    expect(() => statSync(path.join(dataDir, 'redis'))).toThrow();
    await services.stop();
  });
});
