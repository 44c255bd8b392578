import { chownSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { freePort } from '../../src/dev-services/free-port.js';
import { postgresRunAs } from '../../src/dev-services/os-user.js';
import { spawnServer, waitUntilReady } from '../../src/dev-services/server-process.js';
import { trackService } from './process.js';
import { tempDir } from './temp-dir.js';

/** Debian's pgbouncer (`.ci/run` installs it when missing). */
export const PGBOUNCER_BIN = '/usr/sbin/pgbouncer';

export interface PgBouncer {
  /** A client URL of `database` through the pooler. */
  url(database: string): string;
  close(): Promise<void>;
}

export interface PgBouncerOptions {
  /** The PostgreSQL server behind it (any database of it). */
  serverUrl: string;
  /** The databases it serves, by name on the server. */
  databases: string[];
  /** Server connections per database: small, so clients really share them. */
  poolSize: number;
  /** Run on each new server connection (the documented way to set statement_timeout behind it). */
  connectQuery?: string;
}

/**
 * A real PgBouncer in transaction mode in front of the test server: a server connection
 * belongs to a client for one transaction only, as in production behind a pooler.
 */
export async function startPgBouncer(options: PgBouncerOptions): Promise<PgBouncer> {
  const server = new URL(options.serverUrl);
  const dir = tempDir('pgbouncer');
  // PgBouncer refuses to run as root; it runs as the embedded PostgreSQL's OS user.
  const runAs = postgresRunAs();
  if (runAs) chownSync(dir, runAs.uid, runAs.gid);
  const port = await freePort();
  const connect = options.connectQuery ? ` connect_query='${options.connectQuery.replace(/'/g, "''")}'` : '';
  const config = [
    '[databases]',
    ...options.databases.map((name) => `${name} = host=${server.hostname} port=${server.port} dbname=${name} user=${decodeURIComponent(server.username) || 'postgres'}${connect}`),
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    'unix_socket_dir =',
    'auth_type = any',
    'pool_mode = transaction',
    `default_pool_size = ${options.poolSize}`,
    'min_pool_size = 0',
    'reserve_pool_size = 0',
    'max_client_conn = 500',
    'ignore_startup_parameters = extra_float_digits,statement_timeout',
    `logfile = ${path.join(dir, 'pgbouncer.log')}`,
    `pidfile = ${path.join(dir, 'pgbouncer.pid')}`,
    'log_connections = 0',
    'log_disconnections = 0',
  ].join('\n');
  const configFile = path.join(dir, 'pgbouncer.ini');
  writeFileSync(configFile, `${config}\n`);
  if (runAs) chownSync(configFile, runAs.uid, runAs.gid);
  const bouncer = spawnServer({ command: PGBOUNCER_BIN, args: [configFile], logFile: path.join(dir, 'stdout.log'), cwd: dir, uid: runAs?.uid, gid: runAs?.gid });
  const url = (database: string) => `postgresql://postgres@127.0.0.1:${port}/${database}`;
  const close = () => bouncer.stop('SIGINT', 5_000);
  trackService(close);
  await waitUntilReady('pgbouncer', bouncer, async () => {
    const client = new pg.Client({ connectionString: url(options.databases[0]!), connectionTimeoutMillis: 1000 });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.query('SELECT 1');
      return true;
    } finally {
      await client.end().catch(() => {});
    }
  }, 15_000);
  return { url, close };
}
