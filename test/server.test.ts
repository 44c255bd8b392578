import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { MIGRATION_NAMES } from './helpers/database.js';
import { freePort, runTs, runTsToEnd } from './helpers/process.js';
import { testKeyPrefix } from './helpers/redis-keys.js';

const ADMIN_URL = 'postgresql://postgres@127.0.0.1:5432/postgres';
const dbName = `tb_server_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
const prefix = testKeyPrefix();

afterAll(async () => {
  const client = new pg.Client({ connectionString: ADMIN_URL });
  await client.connect();
  await client.query(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`);
  await client.end();
});

describe('npm start with no configuration at all', () => {
  it('creates and migrates the database, runs on the built-in emulator, serves a tunnel end to end, and exits 0 on SIGTERM', async () => {
    const port = await freePort();
    const env = { PORT: String(port), DATABASE_URL: `postgresql://postgres@127.0.0.1:5432/${dbName}`, REDIS_KEY_PREFIX: prefix };
    const server = runTs('src/server.ts', [], env);
    try {
      await server.waitFor(/tunnel broker ready/);
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
  });
});

describe('startup failures', () => {
  it('refuses to start in production without secrets, naming each missing variable', async () => {
    const { code, output } = await runTsToEnd('src/server.ts', [], { NODE_ENV: 'production' });
    expect(code).toBe(1);
    for (const name of ['JWT_SECRET', 'CLOUDFLARE_API_TOKEN', 'CLOUDFLARE_ACCOUNT_ID', 'CLOUDFLARE_ZONE_ID', 'TUNNEL_DOMAIN']) expect(output).toContain(name);
  });

  it('fails fast when PostgreSQL cannot be reached', async () => {
    const started = Date.now();
    const { code, output } = await runTsToEnd('src/server.ts', [], { DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nothing', PORT: String(await freePort()) });
    expect(code).not.toBe(0);
    expect(output).toMatch(/ECONNREFUSED|connect|PostgreSQL/i);
    expect(Date.now() - started).toBeLessThan(25_000);
  });
});

describe('npm run db:migrate', () => {
  it('creates a missing database and applies the migrations, then has nothing to do', async () => {
    const name = `tb_migrate_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
    const env = { DATABASE_URL: `postgresql://postgres@127.0.0.1:5432/${name}` };
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
