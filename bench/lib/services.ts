/**
 * What the benchmark runs against: a fresh database on the local PostgreSQL, Redis
 * counters, and real processes (the broker's own entry point, the floor server).
 * Every wait here is bounded in time and in iterations.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import pg from 'pg';
import { quoteIdent, runMigrations, withDatabase } from '../../src/db/migrate.js';
import { freePort } from '../../src/dev-services/free-port.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface BenchDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

export async function withPg<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** CREATE DATABASE tb_bench_<random>_<label>, migrated. drop() removes it (WITH FORCE). */
export async function createBenchDatabase(serverUrl: string, label: string): Promise<BenchDatabase> {
  const name = `tb_bench_${randomBytes(4).toString('hex')}_${label}`;
  await withPg(serverUrl, (c) => c.query(`CREATE DATABASE ${quoteIdent(name)}`));
  const url = withDatabase(serverUrl, name);
  let dropped = false;
  const drop = async () => {
    if (dropped) return;
    dropped = true;
    await withPg(serverUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`));
  };
  try {
    await runMigrations({ databaseUrl: url });
  } catch (error) {
    await drop().catch(() => {});
    throw error;
  }
  return { name, url, drop };
}

export interface PgCounters {
  xact_commit: number;
  xact_rollback: number;
  tup_returned: number;
  tup_fetched: number;
  tup_inserted: number;
  tup_updated: number;
  tup_deleted: number;
  blks_hit: number;
  blks_read: number;
}

export const PG_COUNTER_NAMES: ReadonlyArray<keyof PgCounters> = [
  'xact_commit', 'xact_rollback', 'tup_returned', 'tup_fetched', 'tup_inserted', 'tup_updated', 'tup_deleted', 'blks_hit', 'blks_read',
];

/** pg_stat_database for one database, read from a connection to another one. */
export async function pgCounters(admin: pg.Client, database: string): Promise<PgCounters> {
  const { rows } = await admin.query(`SELECT ${PG_COUNTER_NAMES.join(', ')} FROM pg_stat_database WHERE datname = $1`, [database]);
  const row = rows[0] as Record<string, string> | undefined;
  if (!row) throw new Error(`no pg_stat_database row for ${database}`);
  return Object.fromEntries(PG_COUNTER_NAMES.map((k) => [k, Number(row[k])])) as unknown as PgCounters;
}

export function pgDelta(before: PgCounters, after: PgCounters): PgCounters {
  return Object.fromEntries(PG_COUNTER_NAMES.map((k) => [k, after[k] - before[k]])) as unknown as PgCounters;
}

/**
 * Backends flush their statistics at exit, or while idle at most every 10 s (PostgreSQL 15):
 * poll until two reads a second apart agree. Bounded by `timeoutMs`.
 */
export async function pgCountersSettled(admin: pg.Client, database: string, timeoutMs = 12_000, intervalMs = 1_000): Promise<PgCounters> {
  const deadline = Date.now() + timeoutMs;
  let last = await pgCounters(admin, database);
  for (let i = 0; i < 1_000 && Date.now() < deadline; i++) {
    await new Promise((r) => setTimeout(r, intervalMs));
    const now = await pgCounters(admin, database);
    if (PG_COUNTER_NAMES.every((k) => now[k] === last[k])) return now;
    last = now;
  }
  return last;
}

/**
 * Scan counters of every table and index of a database (pg_stat_user_tables / _indexes),
 * as "table.counter" and "table/index.counter": which relation a change in
 * pg_stat_database's tuple counters comes from. Read on a short-lived connection to that
 * database (closed, so its own reads are flushed at once).
 */
export async function pgRelationCounters(url: string): Promise<Map<string, number>> {
  return withPg(url, async (c) => {
    const out = new Map<string, number>();
    const tables = await c.query<Record<string, string>>('SELECT relname, seq_scan, seq_tup_read, idx_scan, idx_tup_fetch, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables');
    for (const row of tables.rows) {
      for (const k of ['seq_scan', 'seq_tup_read', 'idx_scan', 'idx_tup_fetch', 'n_tup_ins', 'n_tup_upd', 'n_tup_hot_upd', 'n_tup_del']) out.set(`${row.relname}.${k}`, Number(row[k] ?? 0));
    }
    const indexes = await c.query<Record<string, string>>('SELECT relname, indexrelname, idx_scan, idx_tup_read, idx_tup_fetch FROM pg_stat_user_indexes');
    for (const row of indexes.rows) {
      for (const k of ['idx_scan', 'idx_tup_read', 'idx_tup_fetch']) out.set(`${row.relname}/${row.indexrelname}.${k}`, Number(row[k] ?? 0));
    }
    return out;
  });
}

/** Keeps autovacuum away from every table of the database (its work would land in the counters at random). */
export async function disableAutovacuum(url: string): Promise<void> {
  await withPg(url, async (c) => {
    const { rows } = await c.query<{ name: string }>("SELECT format('%I.%I', schemaname, relname) AS name FROM pg_stat_user_tables");
    for (const { name } of rows) await c.query(`ALTER TABLE ${name} SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)`);
  });
}

/** INFO commandstats as command -> calls (commands run inside Lua scripts count too, in Redis 7). */
export async function redisCommandStats(redis: Redis): Promise<Map<string, number>> {
  const text = await redis.info('commandstats');
  const stats = new Map<string, number>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
    if (m) stats.set(m[1]!, Number(m[2]));
  }
  return stats;
}

/** after - before, for the keys that changed. */
export function commandDelta(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const delta = new Map<string, number>();
  for (const [cmd, calls] of after) {
    const d = calls - (before.get(cmd) ?? 0);
    if (d !== 0) delta.set(cmd, d);
  }
  return delta;
}

export async function redisUsedMemory(redis: Redis): Promise<number> {
  const text = await redis.info('memory');
  const m = /^used_memory:(\d+)/m.exec(text);
  if (!m) throw new Error('INFO memory has no used_memory');
  return Number(m[1]);
}

/** Resident set size of a process, from /proc (Linux). NaN where unavailable. */
export function rssBytes(pid: number | undefined): number {
  return procStatusBytes(pid, 'VmRSS');
}

/** The private (anonymous) part of the RSS: heap and stacks, not the mapped code of node and its libraries. */
export function rssAnonBytes(pid: number | undefined): number {
  return procStatusBytes(pid, 'RssAnon');
}

function procStatusBytes(pid: number | undefined, field: string): number {
  if (pid === undefined) return Number.NaN;
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

const CLOCK_TICKS_PER_SECOND = 100;

/**
 * CPU time (user + system) a process has used so far, in ms, from /proc (Linux; 10 ms
 * resolution). Unlike wall time it hardly depends on what else the machine is running,
 * so per-operation CPU is the steadier measure on a shared machine. NaN where unavailable.
 */
export function cpuMs(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return Number.NaN;
  }
}

export interface LogLine {
  level?: number;
  msg?: string;
  event?: string;
  [key: string]: unknown;
}

export interface ServerProcess {
  name: string;
  port: number;
  baseUrl: string;
  child: ChildProcess;
  pid: number | undefined;
  /** From spawn to `ready`: start-up, which a profile of this process should skip. */
  readyAfterMs: number;
  /** Everything it printed (the last 1 MiB). */
  output(): string;
  /** Every JSON log line so far (up to 50,000). */
  readonly lines: LogLine[];
  /** Resolves with the first line (already seen or future) that matches, or rejects after timeoutMs. */
  waitForLine(match: (line: LogLine) => boolean, timeoutMs: number): Promise<LogLine>;
  rss(): number;
  /** CPU time used so far, ms. */
  cpuMs(): number;
  /** SIGTERM, then SIGKILL after 15 s; resolves with the exit code. */
  stop(): Promise<number | null>;
}

const MAX_KEPT_LINES = 50_000;
const MAX_KEPT_OUTPUT = 1024 * 1024;

/**
 * Runs an entry point of this repo: TypeScript with tsx, as `npm start` does
 * (`node [nodeArgs] --import tsx <entry>`), or compiled JavaScript (an entry ending in `.js`,
 * e.g. dist/server.js) with node alone, as the container image does; on a free loopback port, with only the given
 * environment (plus PATH and HOME), and waits for `ready` in its output.
 */
export async function startServerProcess(options: {
  name: string;
  entry: string;
  env: Record<string, string>;
  ready: RegExp;
  /** e.g. ['--cpu-prof', '--cpu-prof-dir=…'] (not allowed in NODE_OPTIONS). */
  nodeArgs?: string[];
  readyTimeoutMs?: number;
}): Promise<ServerProcess> {
  const port = await freePort();
  const spawnedAt = performance.now();
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', LOG_PRETTY: 'false', ...options.env, PORT: String(port), HOST: '127.0.0.1' };
  const loader = options.entry.endsWith('.js') ? [] : ['--import', 'tsx'];
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), ...loader, options.entry], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let out = '';
  const keep = (text: string) => {
    out += text;
    if (out.length > MAX_KEPT_OUTPUT) out = out.slice(-MAX_KEPT_OUTPUT / 2);
  };
  const lines: LogLine[] = [];
  const waiters = new Set<{ match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }>();
  let partial = '';
  let readySeen = false;
  let onReady: (() => void) | undefined;
  child.stderr!.on('data', (chunk: Buffer) => keep(chunk.toString('utf8')));
  child.stdout!.on('data', (chunk: Buffer) => {
    const text = partial + chunk.toString('utf8');
    keep(chunk.toString('utf8'));
    const parts = text.split('\n');
    partial = parts.pop() ?? '';
    for (const raw of parts) {
      if (!readySeen && options.ready.test(raw)) {
        readySeen = true;
        onReady?.();
      }
      if (!raw.startsWith('{')) continue;
      let line: LogLine;
      try {
        line = JSON.parse(raw) as LogLine;
      } catch {
        continue;
      }
      if (lines.length < MAX_KEPT_LINES) lines.push(line);
      for (const w of waiters) {
        if (w.match(line)) {
          waiters.delete(w);
          w.resolve(line);
        }
      }
    }
  });
  const stop = async (): Promise<number | null> => {
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${options.name}: not ready within ${options.readyTimeoutMs ?? 60_000} ms:\n${out.slice(-3000)}`)), options.readyTimeoutMs ?? 60_000);
      onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      if (readySeen) onReady();
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`${options.name} exited (${code}) before it was ready:\n${out.slice(-3000)}`));
      });
    });
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return {
    name: options.name,
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    child,
    pid: child.pid,
    readyAfterMs: performance.now() - spawnedAt,
    output: () => out,
    lines,
    waitForLine(match, timeoutMs) {
      const seen = lines.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise<LogLine>((resolve, reject) => {
        const waiter = {
          match,
          resolve: (l: LogLine) => {
            clearTimeout(timer);
            resolve(l);
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`${options.name}: no matching log line within ${timeoutMs} ms; last output:\n${out.slice(-2000)}`));
        }, timeoutMs);
        waiters.add(waiter);
      });
    },
    rss: () => rssBytes(child.pid),
    cpuMs: () => cpuMs(child.pid),
    stop,
  };
}
