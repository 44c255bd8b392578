import { lstatSync, mkdirSync, readlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EmbeddedPostgres } from '../../src/dev-services/embedded-postgres.js';
import { hydrateSymlinks } from '../../src/dev-services/postgres-binaries.js';
import { withClient } from '../helpers/database.js';
import { tempDir } from '../helpers/temp-dir.js';

const servers: EmbeddedPostgres[] = [];
afterAll(async () => {
  for (const server of servers) await server.stop();
});


function embedded(dir: string): EmbeddedPostgres {
  const server = new EmbeddedPostgres({ dir, durable: false });
  servers.push(server);
  return server;
}

describe('EmbeddedPostgres', () => {
  it('initialises a cluster in its folder on first start, and a second start on that folder finds it running instead of failing on the lock file', async () => {
    const dir = tempDir('embedded-pg');
    const owner = embedded(dir);
    const first = await owner.start();
    expect(first.reused).toBe(false);
    expect(first.version).toMatch(/^18\./);
    await withClient(first.url(), (client) => client.query('CREATE TABLE kept (id int)'));

    // What a broker started after a killed one sees: postmaster.pid names a live server.
    const second = embedded(dir);
    const found = await second.start();
    expect(found).toMatchObject({ reused: true, port: first.port });
    // The second does not own it: its stop() leaves the server up.
    await second.stop();
    expect(await withClient(first.url(), async (c) => (await c.query("SELECT to_regclass('kept') AS t")).rows[0].t)).toBe('kept');

    await owner.stop();
    await expect(withClient(first.url(), (c) => c.query('SELECT 1'))).rejects.toThrow();
    // Data survives a restart; the port is kept, so URLs handed out stay valid.
    const again = await owner.start();
    expect(again).toMatchObject({ reused: false, port: first.port });
    expect(await withClient(again.url(), async (c) => (await c.query("SELECT to_regclass('kept') AS t")).rows[0].t)).toBe('kept');
  });

  it('comes back after a crash (immediate shutdown) with committed data, on the same port', async () => {
    const server = embedded(tempDir('embedded-pg'));
    const running = await server.start();
    await withClient(running.url(), (c) => c.query('CREATE TABLE t AS SELECT 1 AS one'));
    await server.crash();
    const back = await server.start();
    expect(back.port).toBe(running.port);
    expect(await withClient(back.url(), async (c) => (await c.query('SELECT one FROM t')).rows)).toEqual([{ one: 1 }]);
  });

  it('excludes across connections with advisory locks (what the migration runner and per-user limits rely on; pglite cannot)', async () => {
    const server = embedded(tempDir('embedded-pg'));
    const running = await server.start();
    await withClient(running.url(), async (a) => {
      await a.query('SELECT pg_advisory_lock(42)');
      await withClient(running.url(), async (b) => {
        expect((await b.query('SELECT pg_try_advisory_lock(42) AS got')).rows[0].got).toBe(false);
        await a.query('SELECT pg_advisory_unlock(42)');
        expect((await b.query('SELECT pg_try_advisory_lock(42) AS got')).rows[0].got).toBe(true);
      });
    });
  });
});

describe('hydrateSymlinks', () => {
  it('recreates the shared-library links that a skipped postinstall never made, and leaves existing ones alone', () => {
    const root = tempDir('embedded-pg');
    mkdirSync(path.join(root, 'native', 'lib'), { recursive: true });
    writeFileSync(path.join(root, 'native', 'lib', 'libicuuc.so.60.2'), '');
    writeFileSync(path.join(root, 'native', 'pg-symlinks.json'), JSON.stringify([
      { source: 'native/lib/libicuuc.so.60.2', target: 'native/lib/libicuuc.so.60' },
      { source: 'native/lib/libicuuc.so.60.2', target: 'native/lib/libicuuc.so' },
    ]));
    expect(hydrateSymlinks(root)).toBe(2);
    const link = path.join(root, 'native', 'lib', 'libicuuc.so.60');
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readlinkSync(link)).toBe('libicuuc.so.60.2'); // relative, as the package's own script makes them
    expect(hydrateSymlinks(root)).toBe(0);
  });
});
