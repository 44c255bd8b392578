import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import pg from 'pg';
import { runMigrations } from '../../src/db/migrate.js';
import { startTestBroker, type TestBroker, type TestBrokerOptions } from './broker.js';
import { freePort, trackService } from './process.js';

const run = promisify(execFile);

/**
 * Private PostgreSQL and Redis servers on their own loopback ports, for tests that stop
 * and restart them. The shared servers stay untouched, so other test files keep running.
 */

async function until(check: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 1000; i++) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not become ready`);
}

export interface PrivateRedis {
  url: string;
  port: number;
  start(): Promise<void>;
  /** Stops it; it comes back empty (no persistence), like a restarted production Redis without AOF. */
  stop(): Promise<void>;
  close(): Promise<void>;
}

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  const ping = async () => {
    const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on('error', () => {});
    try {
      await client.connect();
      return (await client.ping()) === 'PONG';
    } finally {
      client.disconnect();
    }
  };
  const start = async () => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning'], { stdio: 'ignore' });
    await until(ping, `redis on ${port}`);
  };
  const stop = async () => {
    // Killed by a signal, a child has no exit code: without signalCode a second stop would wait forever.
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child!.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  };
  await start();
  trackService(stop);
  return { url, port, start, stop, close: stop };
}

export interface PrivatePostgres {
  port: number;
  url(database?: string): string;
  start(): Promise<void>;
  stop(): Promise<void>;
  close(): Promise<void>;
}

function pgBin(name: string): string {
  const versions = readdirSync('/usr/lib/postgresql').sort();
  return join('/usr/lib/postgresql', versions[versions.length - 1]!, 'bin', name);
}

/** initdb into a temp dir (as the postgres user: PostgreSQL refuses to run as root). */
export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'tb-pg-'));
  const asPostgres = process.getuid?.() === 0;
  if (asPostgres) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const { stdout: gid } = await run('id', ['-g', 'postgres']);
    chownSync(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const exec = (bin: string, args: string[]) =>
    asPostgres ? run('runuser', ['-u', 'postgres', '--', pgBin(bin), ...args]) : run(pgBin(bin), args);
  const data = join(dir, 'data');
  await exec('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
  const url = (database = 'postgres') => `postgresql://postgres@127.0.0.1:${port}/${database}`;
  const start = async () => {
    await exec('pg_ctl', ['-D', data, '-w', '-l', join(dir, 'log'), '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`, 'start']);
    await until(async () => {
      const client = new pg.Client({ connectionString: url() });
      await client.connect();
      await client.end();
      return true;
    }, `postgres on ${port}`);
  };
  const stop = async () => {
    if (!existsSync(join(data, 'postmaster.pid'))) return;
    await exec('pg_ctl', ['-D', data, '-w', '-m', 'immediate', 'stop']);
  };
  const close = async () => {
    await stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  };
  // Registered before the first start, so a start that fails still has its directory removed.
  trackService(close);
  await start();
  return { port, url, start, stop, close };
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
