import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { quoteIdent, runMigrations, withDatabase } from '../../src/db/migrate.js';
import { testDatabaseServerUrl } from './test-services.js';

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

const MIGRATIONS_DIR = fileURLToPath(new URL('../../prisma/migrations/', import.meta.url));
const TEMPLATE_PREFIX = 'tb_tpl_';
/** The databases this test file made and has not dropped yet (each file has its own module registry). */
const undropped = new Set<TestDatabase>();

/** The names of the migrations in prisma/migrations, in the order they apply. */
export const MIGRATION_NAMES: readonly string[] = readdirSync(MIGRATIONS_DIR, { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => entry.name)
  .sort();
// Serialises template builds across every test process on the server. Any constant
// works as long as it is not Prisma migrate's key (72707369), which the runner
// itself takes inside each database.
const TEMPLATE_LOCK_KEY = 0x7462_7470; // "tbtp"

/**
 * A fresh, fully migrated database with a unique name (tb_test_<random>) on the run's
 * server (test/helpers/test-services.ts); drop() removes it, terminating leftover connections.
 *
 * Cloning is ~10x faster than migrating (see the measurements in the report that came
 * with this file), so the migrations run once into a template database named after a
 * hash of prisma/migrations — edit a migration and the next run builds a new template
 * instead of cloning a stale one. The template stays between runs, as a cache; old ones
 * are deliberately left alone too: another checkout (a branch, a worktree) sharing this
 * server may still be cloning its own. Every tb_test_* database is dropped by its test file
 * (at the latest by the shared hook in cleanup-hooks.ts); only a test process that is
 * killed leaves one. docs/guarantees.md (Tests) says how to clear those and old templates.
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  const baseUrl = testDatabaseServerUrl();
  const template = await ensureTemplate(baseUrl);
  const name = `tb_test_${randomBytes(6).toString('hex')}`;
  await withClient(baseUrl, (client) => client.query(`CREATE DATABASE ${quoteIdent(name)} TEMPLATE ${quoteIdent(template)}`));
  let dropped = false;
  const db: TestDatabase = {
    url: withDatabase(baseUrl, name),
    name,
    async drop() {
      if (dropped) return;
      dropped = true;
      // WITH (FORCE) (PostgreSQL 13+) terminates sessions a test forgot to close.
      await withClient(baseUrl, (client) => client.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`));
      undropped.delete(db);
    },
  };
  undropped.add(db);
  return db;
}

/** Drops every database this test file made and did not drop (test/helpers/cleanup-hooks.ts runs it last). */
export async function dropTestDatabases(): Promise<void> {
  for (const db of [...undropped]) await db.drop();
}

/** Whether a database of that name exists on the test server. */
export async function databaseExists(name: string): Promise<boolean> {
  const baseUrl = testDatabaseServerUrl();
  return withClient(baseUrl, async (client) => (await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount === 1);
}

async function ensureTemplate(baseUrl: string): Promise<string> {
  const template = `${TEMPLATE_PREFIX}${await migrationsHash()}`;
  return withClient(baseUrl, async (client) => {
    // `datistemplate` is set last, so it doubles as "finished building".
    if (await isReadyTemplate(client, template)) return template;
    await client.query('SELECT pg_advisory_lock($1)', [TEMPLATE_LOCK_KEY]);
    try {
      if (await isReadyTemplate(client, template)) return template;
      // A half-built leftover from a killed run.
      await client.query(`DROP DATABASE IF EXISTS ${quoteIdent(template)} WITH (FORCE)`);
      await runMigrations({ databaseUrl: withDatabase(baseUrl, template), migrationsDir: MIGRATIONS_DIR });
      // No connections: CREATE DATABASE ... TEMPLATE refuses while anyone is connected.
      await client.query(`ALTER DATABASE ${quoteIdent(template)} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true`);
      return template;
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [TEMPLATE_LOCK_KEY]);
    }
  });
}

async function isReadyTemplate(client: pg.Client, name: string): Promise<boolean> {
  const { rows } = await client.query<{ datistemplate: boolean }>('SELECT datistemplate FROM pg_database WHERE datname = $1', [name]);
  return rows[0]?.datistemplate === true;
}

// Names and contents of everything under prisma/migrations, so any edit, rename or
// addition yields a new template.
async function migrationsHash(): Promise<string> {
  const hash = createHash('sha256');
  const files = (await readdir(MIGRATIONS_DIR, { recursive: true, withFileTypes: true }))
    .filter((e) => e.isFile())
    .map((e) => path.relative(MIGRATIONS_DIR, path.join(e.parentPath, e.name)).split(path.sep).join('/'))
    .sort();
  for (const file of files) {
    hash.update(`${file}\0`);
    hash.update(await readFile(path.join(MIGRATIONS_DIR, file)));
    hash.update('\0');
  }
  return hash.digest('hex').slice(0, 16);
}

/** A pg client on `url` for the duration of `fn`, closed whatever happens. */
export async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => {});
  try {
    await client.connect();
    return await fn(client);
  } finally {
    await client.end();
  }
}
