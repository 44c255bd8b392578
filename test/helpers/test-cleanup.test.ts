import { spawn } from 'node:child_process';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { startTestBroker } from './broker.js';
import { createTestDatabase, databaseExists, dropTestDatabases } from './database.js';
import { stopLeftoverProcesses, trackChild } from './process.js';
import { cleanUpTestKeyPrefixes, countKeysUnderPrefix, deleteKeysUnderPrefix, REDIS_URL, testKeyPrefix } from './redis-keys.js';

// The suite leaves nothing on the machine's PostgreSQL and Redis but the template database.
const raw = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
afterAll(() => raw.disconnect());

describe('test clean-up', () => {
  it('closing a test broker leaves no key under its prefix and drops its database', async () => {
    const broker = await startTestBroker();
    const prefix = broker.config.redis.keyPrefix;
    const userId = 'cleanup-user';
    const created = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000 } });
    expect(created.statusCode).toBe(201);
    const { tunnelId } = created.json() as { tunnelId: string };
    expect((await broker.app.inject({ method: 'POST', url: `/v1/tunnels/${tunnelId}/heartbeat`, headers: broker.auth(userId) })).statusCode).toBe(200);
    // Heartbeat state, the reaper's schedule, the rate limit and the Cloudflare budget at least.
    expect(await countKeysUnderPrefix(raw, prefix)).toBeGreaterThanOrEqual(4);

    await broker.close();

    expect(await countKeysUnderPrefix(raw, prefix)).toBe(0);
    expect(await databaseExists(broker.db.name)).toBe(false);
  });

  it('deleteKeysUnderPrefix deletes every key under the prefix, over many SCAN pages and through a prefixed client, and nothing beside it', async () => {
    const prefix = testKeyPrefix();
    const pipeline = raw.pipeline();
    for (let i = 0; i < 2_500; i++) pipeline.set(`${prefix}k${i}`, '1', 'EX', 600);
    // Neighbours: the same text without the final colon, and a glob pattern that must match literally.
    const beside = `${prefix.slice(0, -1)}-beside`;
    pipeline.set(beside, '1', 'EX', 600);
    pipeline.set(`${prefix}glob*`, '1', 'EX', 600);
    pipeline.set(`${prefix}globbed`, '1', 'EX', 600);
    await pipeline.exec();

    expect(await deleteKeysUnderPrefix(raw, `${prefix}glob*`)).toBe(1);
    expect(await raw.exists(`${prefix}globbed`)).toBe(1);
    const prefixed = new Redis(REDIS_URL, { keyPrefix: prefix, maxRetriesPerRequest: 1 });
    try {
      expect(await deleteKeysUnderPrefix(prefixed, prefix)).toBe(2_501);
    } finally {
      prefixed.disconnect();
    }
    expect(await countKeysUnderPrefix(raw, prefix)).toBe(0);
    expect(await raw.get(beside)).toBe('1');
    await raw.unlink(beside);
  });

  it("the shared hook's clean-up kills the processes the file left running, drops the databases it did not drop and empties every prefix it made", async () => {
    const child = trackChild(spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' }));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
    const prefixes = [testKeyPrefix(), testKeyPrefix('label')];
    for (const prefix of prefixes) await raw.set(`${prefix}forgotten`, '1');
    const forgotten = await createTestDatabase();
    expect(await databaseExists(forgotten.name)).toBe(true);

    // What test/helpers/cleanup-hooks.ts runs after a file's own hooks.
    await stopLeftoverProcesses();
    await dropTestDatabases();
    await cleanUpTestKeyPrefixes();

    expect(await exited).toBe('SIGKILL');
    for (const prefix of prefixes) expect(await countKeysUnderPrefix(raw, prefix)).toBe(0);
    expect(await databaseExists(forgotten.name)).toBe(false);
  });
});
