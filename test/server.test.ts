import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { withDatabase } from '../src/db/migrate.js';
import { processAlive } from '../src/dev-services/server-process.js';
import { MIGRATION_NAMES } from './helpers/database.js';
import { freePort, runTs, runTsToEnd } from './helpers/process.js';
import { REDIS_URL } from './helpers/redis-keys.js';
import { testDatabaseServerUrl } from './helpers/test-services.js';
import { tempDir } from './helpers/temp-dir.js';

const ADMIN_URL = testDatabaseServerUrl();
/** A DEV_DATA_DIR of its own, as a fresh clone's empty .data. */
const freshDataDir = () => tempDir('server-data');

describe('npm start with no configuration at all', () => {
  it('runs an embedded PostgreSQL and a private Redis in DEV_DATA_DIR, the built-in emulator, serves a tunnel end to end, and stops all of it on SIGTERM', async () => {
    const port = await freePort();
    const dataDir = freshDataDir();
    // No DATABASE_URL, no REDIS_URL, no Cloudflare: what a newcomer's `npm start` sees.
    const env = { PORT: String(port), DEV_DATA_DIR: dataDir };
    const server = runTs('src/server.ts', [], env);
    try {
      await server.waitFor(/tunnel broker ready/);
      expect(server.output()).toContain(`PostgreSQL: embedded PostgreSQL 18`);
      expect(server.output()).toContain(`data in ${path.join(dataDir, 'postgres')}`);
      expect(server.output()).toContain(`Redis: private redis-server`);
      expect(server.output()).toContain(`files in ${path.join(dataDir, 'redis')}`);
      expect(server.output()).toMatch(/DEVELOPMENT MODE: no Cloudflare settings/);
      expect(server.output()).toMatch(/DEVELOPMENT MODE: JWT_SECRET is not set/);

      // What `npm run token -- alice` runs.
      const token = await runTsToEnd('src/cli/main.ts', ['token', 'create', '--user', 'alice'], env);
      expect(token.code).toBe(0);
      const jwt = token.output.trim().split('\n').pop()!;
      const base = `http://127.0.0.1:${port}`;
      const headers = { authorization: `Bearer ${jwt}`, 'content-type': 'application/json' };

      expect((await fetch(`${base}/healthz`)).status).toBe(200);
      const created = await fetch(`${base}/v1/tunnels`, { method: 'POST', headers, body: JSON.stringify({ port: 3000, requestedSlug: 'demo' }) });
      expect(created.status).toBe(201);
      const body = (await created.json()) as { hostname: string; tunnelId: string };
      expect(body.hostname).toBe('demo.tunnels.localhost');
      const beat = await fetch(`${base}/v1/tunnels/${body.tunnelId}/heartbeat`, { method: 'POST', headers: { authorization: headers.authorization } });
      expect(beat.status).toBe(200);
      const removed = await fetch(`${base}/v1/tunnels/${body.tunnelId}`, { method: 'DELETE', headers: { authorization: headers.authorization } });
      expect(removed.status).toBe(204);
    } finally {
      const code = await server.stop('SIGTERM');
      expect(code).toBe(0);
    }
    expect(server.output()).not.toContain('"level":50');
    // Both servers went with the broker.
    const postmaster = path.join(dataDir, 'postgres', 'postmaster.pid');
    expect(existsSync(postmaster) && processAlive(Number(readFileSync(postmaster, 'utf8').split('\n')[0]))).toBe(false);
    expect(existsSync(path.join(dataDir, 'redis', 'server.json'))).toBe(false);
  });
});

describe('startup failures', () => {
  it('refuses to start in production without secrets, naming each missing variable', async () => {
    const { code, output } = await runTsToEnd('src/server.ts', [], { NODE_ENV: 'production' });
    expect(code).toBe(1);
    for (const name of ['DATABASE_URL', 'REDIS_URL', 'JWT_SECRET', 'CLOUDFLARE_API_TOKEN', 'CLOUDFLARE_ACCOUNT_ID', 'CLOUDFLARE_ZONE_ID', 'TUNNEL_DOMAIN']) expect(output).toContain(name);
  });

  it('without REDIS_URL and without redis-server on the PATH, exits at once with how to install one, having started nothing', async () => {
    const dataDir = freshDataDir();
    const emptyPath = tempDir('no-redis');
    const started = Date.now();
    const { code, output } = await runTsToEnd('src/server.ts', [], { DEV_DATA_DIR: dataDir, PATH: emptyPath, PORT: String(await freePort()) });
    expect(code).toBe(1);
    expect(output).toContain('there is no `redis-server` on the PATH');
    for (const hint of ['brew install redis', 'apt install redis-server', 'REDIS_URL']) expect(output).toContain(hint);
    expect(output).not.toMatch(/"level":(50|60)|\bat .*\.ts:\d+/); // a message, not a stack trace
    expect(existsSync(path.join(dataDir, 'postgres'))).toBe(false);
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it('on a port already in use, says so and stops the embedded PostgreSQL and private Redis it started', async () => {
    const dataDir = freshDataDir();
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as net.AddressInfo).port;
      const { code, output } = await runTsToEnd('src/server.ts', [], { DEV_DATA_DIR: dataDir, PORT: String(port) });
      expect(code).toBe(1);
      expect(output).toContain(`port ${port} is in use: set PORT to a free one`);
      const postmaster = path.join(dataDir, 'postgres', 'postmaster.pid');
      expect(existsSync(postmaster) && processAlive(Number(readFileSync(postmaster, 'utf8').split('\n')[0]))).toBe(false);
      expect(existsSync(path.join(dataDir, 'redis', 'server.json'))).toBe(false);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });

  it('fails fast when PostgreSQL cannot be reached', async () => {
    const started = Date.now();
    const { code, output } = await runTsToEnd('src/server.ts', [], { DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nothing', REDIS_URL, PORT: String(await freePort()) });
    expect(code).not.toBe(0);
    expect(output).toMatch(/ECONNREFUSED|connect|PostgreSQL/i);
    expect(Date.now() - started).toBeLessThan(25_000);
  });
});

describe('npm run db:migrate', () => {
  it('creates a missing database and applies the migrations, then has nothing to do', async () => {
    const name = `tb_migrate_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
    const env = { DATABASE_URL: withDatabase(ADMIN_URL, name) };
    try {
      const first = await runTsToEnd('src/db/migrate-main.ts', [], env);
      expect(first.code).toBe(0);
      expect(first.output).toContain(`applied ${MIGRATION_NAMES.length} migration(s): ${MIGRATION_NAMES.join(', ')}`);
      const second = await runTsToEnd('src/db/migrate-main.ts', [], env);
      expect(second.code).toBe(0);
      expect(second.output).toMatch(/up to date/);
    } finally {
      const client = new pg.Client({ connectionString: ADMIN_URL });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await client.end();
    }
  });
});
