import { spawn } from 'node:child_process';
import type { TestBroker } from './broker.js';
import { TEST_DOMAIN, TEST_JWT_SECRET } from './broker.js';
import { childEnv, REPO_ROOT, trackChild } from './process.js';
import { redisEnv } from './redis-keys.js';

/** Each CLI run starts Node, tsx and the broker's modules; tests running several get this long. */
export const CLI_TEST_TIMEOUT_MS = 300_000;

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI; see `cliRunner`. */
export type RunCli = (args: string[], env: Record<string, string>, options?: { entry?: string[]; timeoutMs?: number }) => Promise<CliRun>;

/**
 * Runs the operator CLI (`npm run cli -- …`'s entry point, or another script such as the bin)
 * as a child process with only `env`, and returns its exit code and its two streams apart:
 * results belong on stdout, errors on stderr. At most `maxConcurrent` children of one runner
 * run at once: each start is CPU-bound (Node, tsx, the broker's modules), so more at once only
 * makes every one of them slow.
 */
export function cliRunner(maxConcurrent = 2): RunCli {
  let running = 0;
  const waiting: Array<() => void> = [];
  return async (args, env, options = {}) => {
    if (running >= maxConcurrent) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    try {
      return await spawnCli(args, env, options);
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
}

function spawnCli(args: string[], env: Record<string, string>, options: { entry?: string[]; timeoutMs?: number }): Promise<CliRun> {
  const entry = options.entry ?? ['--import', 'tsx', 'src/cli/main.ts'];
  const child = trackChild(spawn(process.execPath, [...entry, ...args], { cwd: REPO_ROOT, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] }));
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  // Only a safety net against a hung child; the test's own timeout is the real bound.
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? CLI_TEST_TIMEOUT_MS - 10_000);
  return new Promise((resolve) => {
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** What a CLI needs to work on the same database, Redis prefix and Cloudflare (emulator) as `broker`. */
export function cliEnv(broker: TestBroker, extra: Record<string, string> = {}): Record<string, string> {
  return {
    NODE_ENV: 'test',
    DATABASE_URL: broker.config.databaseUrl,
    ...redisEnv(),
    REDIS_KEY_PREFIX: broker.config.redis.keyPrefix,
    JWT_SECRET: TEST_JWT_SECRET,
    CLOUDFLARE_API_TOKEN: broker.emulator.apiToken,
    CLOUDFLARE_ACCOUNT_ID: broker.emulator.accountId,
    CLOUDFLARE_ZONE_ID: broker.emulator.zoneId,
    CLOUDFLARE_BASE_URL: broker.emulator.url,
    TUNNEL_DOMAIN: TEST_DOMAIN,
    ...extra,
  };
}
