import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { withOneShotRedis } from '../redis/one-shot-client.js';
import { freePort } from './free-port.js';
import { processAlive, type ServerProcess, spawnServer, waitUntilReady } from './server-process.js';

export interface PrivateRedisOptions {
  /** Its files live in `<dir>/redis`. */
  dir: string;
  /** The program to run, looked up on the PATH. */
  command?: string;
  startTimeoutMs?: number;
}

export interface RunningRedis {
  port: number;
  url: string;
  version: string;
  /** Whether this call found a private server from an earlier start still running and used it. */
  reused: boolean;
}

export const PRIVATE_REDIS_DEFAULTS = {
  startTimeoutMs: 10_000,
  stopGraceMs: 5_000,
} as const;

import { RedisServerMissingError } from './redis-server-missing.js';

export { REDIS_SERVER_MISSING_MESSAGE, RedisServerMissingError } from './redis-server-missing.js';

interface ServerRecord {
  pid: number;
  port: number;
}

/**
 * A private `redis-server` from the PATH, for development and tests: 127.0.0.1 only, a free
 * port, its files in a folder of ours, nothing persisted (the broker rebuilds what it keeps
 * in Redis from PostgreSQL), and `noeviction`, as production needs. start() and stop() are
 * idempotent; stop() stops only a server this object started. A server left running by a
 * killed broker is found through server.json and used.
 */
export class PrivateRedis {
  private readonly dir: string;
  private server: ServerProcess | undefined;
  private running: RunningRedis | undefined;
  /** Kept across restarts, so a URL handed out stays valid after stop() and start(). */
  private port: number | undefined;

  constructor(private readonly options: PrivateRedisOptions) {
    this.dir = path.join(options.dir, 'redis');
  }

  get location(): string {
    return this.dir;
  }

  async start(): Promise<RunningRedis> {
    if (this.running) return this.running;
    // Only its own folder is private: `recursive` would give the mode to the parents it makes too,
    // and the embedded PostgreSQL's OS user must be able to enter the shared one.
    mkdirSync(this.options.dir, { recursive: true });
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const left = this.leftRunning();
    if (left && (await ping(urlFor(left.port)))) {
      this.running = { port: left.port, url: urlFor(left.port), version: await version(urlFor(left.port)), reused: true };
      return this.running;
    }
    this.port ??= await freePort();
    const port = this.port;
    const server = spawnServer({
      command: this.options.command ?? 'redis-server',
      args: ['--port', String(port), '--bind', '127.0.0.1', '--protected-mode', 'yes', '--dir', this.dir, '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction', '--daemonize', 'no', '--loglevel', 'warning'],
      logFile: path.join(this.dir, 'redis.log'),
    });
    // The spawn error (ENOENT) arrives on the next tick.
    await new Promise((resolve) => setImmediate(resolve));
    if (server.exited() && /ENOENT/.test(server.logTail())) throw new RedisServerMissingError();
    this.server = server;
    const url = urlFor(port);
    try {
      await waitUntilReady('the private redis-server', server, () => ping(url), this.options.startTimeoutMs ?? PRIVATE_REDIS_DEFAULTS.startTimeoutMs);
    } catch (error) {
      await server.stop('SIGKILL', 0);
      this.server = undefined;
      if (/ENOENT/.test(server.logTail())) throw new RedisServerMissingError();
      throw error;
    }
    writeFileSync(this.recordFile, JSON.stringify({ pid: server.pid, port } satisfies ServerRecord));
    this.running = { port, url, version: await version(url), reused: false };
    return this.running;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.running = undefined;
    if (!server) return;
    await server.stop('SIGTERM', PRIVATE_REDIS_DEFAULTS.stopGraceMs);
    rmSync(this.recordFile, { force: true });
  }

  private get recordFile(): string {
    return path.join(this.dir, 'server.json');
  }

  private leftRunning(): ServerRecord | undefined {
    try {
      const record = JSON.parse(readFileSync(this.recordFile, 'utf8')) as ServerRecord;
      return processAlive(record.pid) ? record : undefined;
    } catch {
      return undefined;
    }
  }
}

function urlFor(port: number): string {
  return `redis://127.0.0.1:${port}`;
}

async function ping(url: string): Promise<boolean> {
  return withOneShotRedis(url, async (redis) => (await redis.ping()) === 'PONG').catch(() => false);
}

async function version(url: string): Promise<string> {
  return withOneShotRedis(url, async (redis) => /redis_version:(\S+)/.exec(await redis.info('server'))?.[1] ?? 'unknown');
}
