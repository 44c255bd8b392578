import { existsSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { PrivateRedis, RedisServerMissingError } from '../../src/dev-services/private-redis.js';
import { processAlive } from '../../src/dev-services/server-process.js';
import { runTsToEnd } from '../helpers/process.js';
import { tempDir } from '../helpers/temp-dir.js';

const servers: PrivateRedis[] = [];
afterAll(async () => {
  for (const server of servers) await server.stop();
});


async function config(url: string, name: string): Promise<string> {
  const redis = new Redis(url, { maxRetriesPerRequest: 0 });
  try {
    return ((await redis.config('GET', name)) as string[])[1]!;
  } finally {
    redis.disconnect();
  }
}

describe('PrivateRedis', () => {
  it('runs redis-server on 127.0.0.1 with noeviction and its files in its folder; a second start on the folder uses it; only the starter stops it', async () => {
    const dir = tempDir('private-redis');
    const owner = new PrivateRedis({ dir });
    servers.push(owner);
    const running = await owner.start();
    expect(running.reused).toBe(false);
    expect(await config(running.url, 'maxmemory-policy')).toBe('noeviction');
    expect(await config(running.url, 'bind')).toBe('127.0.0.1');
    expect(await config(running.url, 'dir')).toBe(path.join(dir, 'redis'));

    const second = new PrivateRedis({ dir });
    servers.push(second);
    expect(await second.start()).toMatchObject({ reused: true, port: running.port });
    await second.stop();
    expect(await config(running.url, 'maxmemory-policy')).toBe('noeviction');

    await owner.stop();
    expect(existsSync(path.join(dir, 'redis', 'server.json'))).toBe(false);
    const probe = new Redis(running.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    probe.on('error', () => {});
    await expect(probe.connect()).rejects.toThrow();
    probe.disconnect();
  });

  it('without the program, fails with the paragraph that says how to install redis-server or set REDIS_URL', async () => {
    const missing = new PrivateRedis({ dir: tempDir('private-redis'), command: 'redis-server-that-is-not-installed' });
    servers.push(missing);
    const error = await missing.start().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RedisServerMissingError);
    expect((error as Error).message).toMatch(/brew install redis.*apt install redis-server.*REDIS_URL/s);
  });
});

describe('a server process of the dev services', () => {
  it('is told to stop when the broker exits without stopping it (a second Ctrl-C, a fatal error): it has its own process group, so nothing else would', async () => {
    const run = await runTsToEnd('test/fixtures/exit-without-stop.ts', [], {});
    expect(run.code).toBe(0);
    const pid = Number(/child (\d+)/.exec(run.output)?.[1]);
    expect(pid).toBeGreaterThan(0);
    const deadline = Date.now() + 10_000;
    for (let i = 0; i < 100 && processAlive(pid) && Date.now() < deadline; i++) await new Promise((r) => setTimeout(r, 100));
    expect(processAlive(pid)).toBe(false);
  });
});
