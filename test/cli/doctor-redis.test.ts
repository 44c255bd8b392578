import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withOneShotRedis } from '../../src/redis/one-shot-client.js';
import { startTestBroker, type TestBroker } from '../helpers/broker.js';
import { CLI_TEST_TIMEOUT_MS, cliEnv, cliRunner } from '../helpers/cli.js';
import { startPrivateRedis } from '../helpers/private-services.js';
import { REDIS_CLUSTER_NODES } from '../helpers/redis-keys.js';

const runCli = cliRunner();

let broker: TestBroker;
beforeAll(async () => {
  broker = await startTestBroker();
});
afterAll(async () => {
  await broker?.close();
});

/** doctor's redis line: [symbol, the rest]. */
function redisLine(stdout: string): [string, string] | undefined {
  const m = /^([✓✗!-]) redis: (.*)$/m.exec(stdout);
  return m ? [m[1]!, m[2]!] : undefined;
}

describe('doctor and Redis', () => {
  it('checks a Redis Cluster through its seed nodes', async () => {
    const run = await runCli(['doctor'], cliEnv(broker, { REDIS_CLUSTER_NODES }));
    expect(redisLine(run.stdout)).toEqual(['✓', expect.stringMatching(/^Redis 7\.\S+ at the Redis Cluster at 127\.0\.0\.1:\d+,127\.0\.0\.1:\d+,127\.0\.0\.1:\d+ /)]);
  }, CLI_TEST_TIMEOUT_MS);

  it('warns about a Redis that may evict keys, and says to use noeviction', async () => {
    const redis = await startPrivateRedis();
    await withOneShotRedis(redis.url, (r) => r.config('SET', 'maxmemory-policy', 'allkeys-lru'));
    const run = await runCli(['doctor'], cliEnv(broker, { REDIS_URL: redis.url }));
    const [symbol, text] = redisLine(run.stdout)!;
    expect(symbol).toBe('!');
    expect(text).toMatch(/maxmemory-policy is allkeys-lru: an evicted heartbeat reads as "not found".* — fix: set maxmemory-policy noeviction/);
  }, CLI_TEST_TIMEOUT_MS);
});
