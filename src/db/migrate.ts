import { createHash, randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { Logger } from 'pino';

/**
 * Applies prisma/migrations with plain `pg`, because Prisma's schema engine (the
 * native binary behind `prisma migrate deploy`) cannot be installed everywhere the
 * broker runs. It keeps Prisma's own bookkeeping — the `_prisma_migrations` table,
 * its checksums, its advisory lock — so `prisma migrate status/deploy/resolve` agree
 * with it wherever the engine is available, and the two can even run side by side.
 *
 * Behaviour follows the engine's `applyMigrations` (what `prisma migrate deploy` runs),
 * schema-engine/core/src/commands/apply_migrations.rs in prisma/prisma-engines:
 *  - Pending = folders with no row of the same name that is not rolled back.
 *  - A row with neither finished_at nor rolled_back_at is a failed migration and
 *    blocks everything (Prisma's P3009) until someone resolves it.
 *  - A failure leaves its row with finished_at NULL and the error in `logs` (P3018).
 *  - A database with tables but no `_prisma_migrations` is refused (P3005): applying
 *    the init migration to a schema made some other way would only half-work.
 * Where it differs, on purpose:
 *  - Each migration runs in an explicit transaction together with its bookkeeping
 *    update, so a failure leaves no partial schema behind. (Prisma sends the script as
 *    one multi-statement simple query, which PostgreSQL also runs atomically, so the
 *    constraints are the same: no CREATE INDEX CONCURRENTLY and the like.)
 *  - It warns about checksum drift and about applied migrations missing from the
 *    folder; `migrate deploy` says nothing about either (only `migrate status`/`dev`
 *    look). Neither is an error: an older broker build starting against a database
 *    already migrated by a newer one (rolling deploys, rollbacks) must keep working,
 *    and that is exactly "applied but missing from the folder".
 *  - It waits for the advisory lock as long as it takes (logging that it waits);
 *    Prisma gives up after 10 s, which only turns a slow peer into a failed boot.
 *  - The URL's Prisma-specific `?schema=` parameter is not interpreted; neither does
 *    `@prisma/adapter-pg` at runtime. Everything lives in the connection's default
 *    schema (normally `public`).
 */

export interface MigrateOptions {
  databaseUrl: string;
  /** Default: <repo>/prisma/migrations, resolved from this file's location. */
  migrationsDir?: string;
  logger?: Pick<Logger, 'info' | 'warn' | 'error'>;
}

export interface MigrateResult {
  /** Folder names applied by this run, in order. */
  applied: string[];
  /** Folder names that were already applied before this run. */
  alreadyApplied: string[];
  createdDatabase: boolean;
}

/** Prisma's codes, so the message can be looked up in Prisma's docs. */
export type MigrationErrorCode =
  | 'P3005' // database not empty, no migration history
  | 'P3009' // failed migrations found
  | 'P3018' // a migration failed to apply
  | 'P3019' // migration_lock.toml names another provider
  | 'MIGRATIONS_DIR'; // the folder itself is unusable

export class MigrationError extends Error {
  constructor(
    readonly code: MigrationErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'MigrationError';
  }
}

/**
 * The key `prisma migrate` locks on PostgreSQL (sql-schema-connector,
 * flavour/postgres.rs: `SELECT pg_advisory_lock(72707369)`). Sharing it means this
 * runner and a real `prisma migrate deploy` never run at the same time.
 */
export const PRISMA_MIGRATE_ADVISORY_LOCK_KEY = 72707369;

// Byte-for-byte the engine's DDL (flavour/postgres.rs, create_migrations_table).
const CREATE_MIGRATIONS_TABLE = `CREATE TABLE _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
);
`;

const RESOLVE_DOCS = 'https://pris.ly/d/migrate-resolve';

// src/db/ and, after `npm run build` (rootDir src), dist/db/ both sit two levels
// below the repository root.
const DEFAULT_MIGRATIONS_DIR = fileURLToPath(new URL('../../prisma/migrations/', import.meta.url));

const silentLogger: NonNullable<MigrateOptions['logger']> = { info() {}, warn() {}, error() {} };

interface MigrationFolder {
  name: string;
  script: string;
}

/** A row of Prisma's `_prisma_migrations`. */
export interface MigrationRow {
  id: string;
  checksum: string;
  finished_at: Date | null;
  migration_name: string;
  logs: string | null;
  rolled_back_at: Date | null;
  started_at: Date;
  applied_steps_count: number;
}

/** Applies pending migrations; see the module comment for the exact rules. */
export async function runMigrations(options: MigrateOptions): Promise<MigrateResult> {
  const logger = options.logger ?? silentLogger;
  const migrationsDir = options.migrationsDir ?? DEFAULT_MIGRATIONS_DIR;
  // Read the folder before touching the database: a broken checkout should fail
  // without creating anything.
  const folders = await readMigrationsDir(migrationsDir);

  const createdDatabase = await ensureDatabase(options.databaseUrl);
  if (createdDatabase) logger.info({ database: databaseNameOf(options.databaseUrl) }, 'created database');

  const client = newClient(options.databaseUrl);
  try {
    await client.connect();
    await acquireMigrateLock(client, logger);
    try {
      return { ...(await applyPending(client, folders, logger)), createdDatabase };
    } finally {
      // Closing the session would release it as well; this frees waiting peers
      // before our disconnect round-trip.
      await client.query('SELECT pg_advisory_unlock($1)', [PRISMA_MIGRATE_ADVISORY_LOCK_KEY]).catch(() => {});
    }
  } finally {
    await client.end().catch(() => {});
  }
}

export interface MigrationStatus {
  /** In the folder and applied. */
  applied: string[];
  /** In the folder, not applied yet: `runMigrations` would apply these. */
  pending: string[];
  /** Started but neither finished nor rolled back: they block `runMigrations` (P3009). */
  failed: string[];
  /** Applied, but not in the folder: a newer build migrated this database. */
  notInFolder: string[];
  /** Applied, but the file has changed since. */
  modified: string[];
}

/**
 * Compares the folder with `_prisma_migrations` by the same rules as `runMigrations`,
 * without changing anything: no database is created, no table, no lock taken. A database
 * that was never migrated has every migration pending.
 */
export async function migrationStatus(options: Pick<MigrateOptions, 'databaseUrl' | 'migrationsDir'>): Promise<MigrationStatus> {
  const folders = await readMigrationsDir(options.migrationsDir ?? DEFAULT_MIGRATIONS_DIR);
  const client = newClient(options.databaseUrl);
  try {
    await client.connect();
    const { rows: [table] } = await client.query<{ exists: boolean }>(`SELECT to_regclass('_prisma_migrations') IS NOT NULL AS exists`);
    const rows = table?.exists
      ? (await client.query<Pick<MigrationRow, 'migration_name' | 'checksum' | 'finished_at' | 'rolled_back_at'>>(
        'SELECT migration_name, checksum, finished_at, rolled_back_at FROM _prisma_migrations ORDER BY started_at ASC',
      )).rows
      : [];
    const live = rows.filter((r) => r.rolled_back_at === null);
    const byName = new Map(folders.map((f) => [f.name, f]));
    const appliedNames = new Set(live.map((r) => r.migration_name));
    return {
      applied: folders.filter((f) => appliedNames.has(f.name)).map((f) => f.name),
      pending: folders.filter((f) => !appliedNames.has(f.name)).map((f) => f.name),
      failed: live.filter((r) => r.finished_at === null).map((r) => r.migration_name),
      notInFolder: live.filter((r) => !byName.has(r.migration_name)).map((r) => r.migration_name),
      modified: live
        .filter((r) => r.finished_at !== null && byName.has(r.migration_name) && !scriptMatchesChecksum(byName.get(r.migration_name)!.script, r.checksum))
        .map((r) => r.migration_name),
    };
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Creates the database named in the URL if it does not exist, via the `postgres`
 * maintenance database on the same server (falling back to `template1`, as Prisma
 * does). Returns true only for the caller that actually created it.
 */
export async function ensureDatabase(databaseUrl: string): Promise<boolean> {
  // Try the database itself first: on managed servers the application role often may
  // not connect to `postgres`, and the database usually exists already.
  const probe = newClient(databaseUrl);
  try {
    await probe.connect();
    return false;
  } catch (error) {
    if (pgCode(error) !== '3D000') throw error; // 3D000: invalid_catalog_name
  } finally {
    await probe.end().catch(() => {});
  }

  const name = databaseNameOf(databaseUrl);
  let lastError: unknown;
  for (const maintenance of ['postgres', 'template1']) {
    if (maintenance === name) continue;
    const admin = newClient(withDatabase(databaseUrl, maintenance));
    try {
      await admin.connect();
    } catch (error) {
      await admin.end().catch(() => {});
      lastError = error;
      if (pgCode(error) === '3D000') continue;
      throw error;
    }
    try {
      await admin.query(`CREATE DATABASE ${quoteIdent(name)}`);
      return true;
    } catch (error) {
      // Someone created it between our probe and now. 42P04 is the normal report;
      // two CREATE DATABASE racing on the catalog row can also surface as 23505.
      if (pgCode(error) === '42P04' || pgCode(error) === '23505') return false;
      throw error;
    } finally {
      await admin.end().catch(() => {});
    }
  }
  throw new Error(`Database ${JSON.stringify(name)} does not exist and no maintenance database (postgres, template1) was reachable to create it`, { cause: lastError });
}

async function applyPending(
  client: pg.Client,
  folders: MigrationFolder[],
  logger: NonNullable<MigrateOptions['logger']>,
): Promise<Omit<MigrateResult, 'createdDatabase'>> {
  await initializeMigrationsTable(client);

  const { rows } = await client.query<MigrationRow>(
    `SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count
       FROM _prisma_migrations ORDER BY started_at ASC`,
  );

  const failed = rows.filter((r) => r.finished_at === null && r.rolled_back_at === null);
  if (failed.length > 0) throw foundFailedMigrations(failed);

  const live = rows.filter((r) => r.rolled_back_at === null);
  const byName = new Map(folders.map((f) => [f.name, f]));
  for (const row of live) {
    const folder = byName.get(row.migration_name);
    if (folder === undefined) {
      logger.warn(
        { migration: row.migration_name },
        `migration ${row.migration_name} is applied to the database but missing from the migrations folder; ` +
          'continuing (a newer build may have migrated this database)',
      );
    } else if (!scriptMatchesChecksum(folder.script, row.checksum)) {
      logger.warn(
        { migration: row.migration_name, recordedChecksum: row.checksum, fileChecksum: migrationChecksum(folder.script) },
        `migration ${row.migration_name} was modified after it was applied; the database keeps what the original ` +
          'script did. Restore the file, or put the change in a new migration',
      );
    }
  }

  const appliedNames = new Set(live.map((r) => r.migration_name));
  const alreadyApplied = folders.filter((f) => appliedNames.has(f.name)).map((f) => f.name);
  const pending = folders.filter((f) => !appliedNames.has(f.name));
  const applied: string[] = [];
  for (const migration of pending) {
    logger.info({ migration: migration.name }, `applying migration ${migration.name}`);
    await applyOne(client, migration, logger);
    applied.push(migration.name);
  }
  if (pending.length === 0) logger.info({ alreadyApplied: alreadyApplied.length }, 'no pending migrations');
  return { applied, alreadyApplied };
}

async function applyOne(
  client: pg.Client,
  migration: MigrationFolder,
  logger: NonNullable<MigrateOptions['logger']>,
): Promise<void> {
  const id = randomUUID();
  // The "started" row is committed on its own, before the script, so that a crash
  // or a failure leaves the same trace Prisma leaves: a row without finished_at.
  await client.query(
    'INSERT INTO _prisma_migrations (id, checksum, started_at, migration_name) VALUES ($1, $2, clock_timestamp(), $3)',
    [id, migrationChecksum(migration.script), migration.name],
  );
  try {
    await client.query('BEGIN');
    // No parameters: pg uses the simple query protocol, which runs a whole
    // multi-statement script, as the engine's simple_query does.
    await client.query(migration.script);
    await client.query(
      `UPDATE _prisma_migrations
          SET applied_steps_count = applied_steps_count + 1, finished_at = clock_timestamp()
        WHERE id = $1`,
      [id],
    );
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    const logs = applyFailureLogs(migration, error);
    // If the connection itself is gone this cannot be recorded; the row still has no
    // finished_at, which is enough to block the next run, and the thrown error below
    // carries the real cause.
    await client
      .query('UPDATE _prisma_migrations SET logs = $2 WHERE id = $1', [id, logs])
      .catch((recordError: unknown) => logger.error({ err: recordError, migration: migration.name }, 'could not record the failure in _prisma_migrations'));
    logger.error({ migration: migration.name, code: pgCode(error) }, `migration ${migration.name} failed`);
    throw new MigrationError(
      'P3018',
      `${logs}\n\nThe transaction was rolled back, so the database is as it was before this migration. ` +
        `Fix the migration, then mark the failed attempt as rolled back and run the migrations again:\n` +
        markRolledBackHint(migration.name),
      { cause: error },
    );
  }
}

async function initializeMigrationsTable(client: pg.Client): Promise<void> {
  // Same test as the engine's MigrationPersistence::initialize: only ordinary tables
  // ('r') in the current schema count.
  const { rows } = await client.query<{ relname: string }>(
    `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND n.nspname = current_schema()`,
  );
  if (rows.some((r) => r.relname === '_prisma_migrations')) return;
  if (rows.length > 0) {
    throw new MigrationError(
      'P3005',
      `The database schema is not empty (tables: ${rows.map((r) => r.relname).sort().join(', ')}) but has no ` +
        '_prisma_migrations table, so it was not created by these migrations. Migrate an empty database, or ' +
        'baseline this one first: https://pris.ly/d/migrate-baseline',
    );
  }
  await client.query(CREATE_MIGRATIONS_TABLE);
}

async function acquireMigrateLock(client: pg.Client, logger: NonNullable<MigrateOptions['logger']>): Promise<void> {
  const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [
    PRISMA_MIGRATE_ADVISORY_LOCK_KEY,
  ]);
  if (rows[0]?.locked) return;
  logger.info({ lockKey: PRISMA_MIGRATE_ADVISORY_LOCK_KEY }, 'another process is migrating this database; waiting for it');
  await client.query('SELECT pg_advisory_lock($1)', [PRISMA_MIGRATE_ADVISORY_LOCK_KEY]);
}

async function readMigrationsDir(dir: string): Promise<MigrationFolder[]> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (error) {
    throw new MigrationError('MIGRATIONS_DIR', `Cannot read the migrations folder ${dir}: ${errorMessage(error)}`, { cause: error });
  }
  const lock = await readFile(path.join(dir, 'migration_lock.toml'), 'utf8').catch(() => null);
  if (lock !== null) {
    // Parsed the way the engine does it (migrations_directory.rs).
    const line = lock.split(/\r?\n/).find((l) => l.startsWith('provider'));
    const provider = line === undefined ? '<PROVIDER NOT FOUND>' : line.replace(/^provider = /, '').replace(/^"+|"+$/g, '');
    if (provider !== 'postgresql') {
      throw new MigrationError('P3019', `${path.join(dir, 'migration_lock.toml')} is for provider "${provider}", but this runner only handles "postgresql"`);
    }
  }
  // Prisma sorts with localeCompare; for its `YYYYMMDDHHMMSS_name` folders that is the
  // same as code-point order, which does not depend on the process's locale.
  const names = entries
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const folders: MigrationFolder[] = [];
  for (const name of names) {
    const file = path.join(dir, name, 'migration.sql');
    let script: string;
    try {
      // Read as text, as the Prisma CLI does before handing it to the engine; the
      // checksum is over the UTF-8 encoding of that text.
      script = await readFile(file, 'utf8');
    } catch (error) {
      throw new MigrationError('MIGRATIONS_DIR', `Migration folder ${name} has no readable migration.sql (${file}): ${errorMessage(error)}`, { cause: error });
    }
    folders.push({ name, script });
  }
  return folders;
}

/** Prisma's checksum: lowercase hex SHA-256 of the script's UTF-8 bytes (schema-connector/src/checksum.rs). */
export function migrationChecksum(script: string): string {
  return createHash('sha256').update(script, 'utf8').digest('hex');
}

// checksum.rs script_matches_checksum: line endings do not count (git may have
// converted them), and early engines wrote hex without zero padding.
function scriptMatchesChecksum(script: string, checksum: string): boolean {
  const variants = [script, script.replaceAll('\r\n', '\n'), script.replaceAll('\n', '\r\n')];
  return variants.some((variant) => {
    const digest = createHash('sha256').update(variant, 'utf8').digest();
    const rendered = checksum.length !== 0 && checksum.length !== 64
      ? [...digest].map((b) => b.toString(16)).join('')
      : digest.toString('hex');
    return rendered === checksum;
  });
}

// The shape of the engine's P3018 text, which is what Prisma stores in `logs` and
// what `prisma migrate status` later shows.
function applyFailureLogs(migration: MigrationFolder, error: unknown): string {
  const code = pgCode(error) ?? 'none';
  const position = errorPosition(migration.script, error);
  return (
    'A migration failed to apply. New migrations cannot be applied before the error is recovered from. ' +
    `Read more about how to resolve migration issues in a production database: ${RESOLVE_DOCS}\n\n` +
    `Migration name: ${migration.name}\n\n` +
    `Database error code: ${code}\n\n` +
    `Database error:\nERROR: ${errorMessage(error)}` +
    (position === '' ? '' : `\n\nPosition:\n${position}`)
  );
}

function errorPosition(script: string, error: unknown): string {
  const raw = (error as { position?: unknown } | null)?.position;
  const offset = typeof raw === 'string' ? Number.parseInt(raw, 10) : NaN;
  if (!Number.isFinite(offset) || offset < 1) return '';
  // PostgreSQL reports a 1-based character offset into the query text.
  const lineIndex = script.slice(0, offset - 1).split('\n').length - 1;
  const lines = script.split('\n');
  const first = Math.max(0, lineIndex - 5);
  return lines
    .slice(first, lineIndex + 1)
    .map((line, i) => `${String(first + i + 1).padStart(3)}${i === lineIndex - first ? '>' : ' '} ${line}`)
    .join('\n');
}

function foundFailedMigrations(failed: MigrationRow[]): MigrationError {
  const details = failed
    .map((m) => {
      const logs = m.logs?.trim() ? ` with the following logs:\n${m.logs.trim()}` : '';
      return `The \`${m.migration_name}\` migration started at ${m.started_at.toISOString()} failed${logs}`;
    })
    .join('\n');
  return new MigrationError(
    'P3009',
    'migrate found failed migrations in the target database, new migrations will not be applied. ' +
      `Read more about how to resolve migration issues in a production database: ${RESOLVE_DOCS}\n${details}\n\n` +
      'To recover: if the failed migration changed nothing (this runner applies each migration in one ' +
      'transaction, so a failure here changed nothing) or you have undone its changes, fix it and mark the ' +
      'attempt as rolled back; if you have completed its changes by hand, mark it as applied instead ' +
      '(`prisma migrate resolve --applied <name>` where the Prisma engine is available). To mark it rolled back:\n' +
      failed.map((m) => markRolledBackHint(m.migration_name)).join('\n'),
  );
}

function markRolledBackHint(name: string): string {
  return (
    `  npx prisma migrate resolve --rolled-back "${name}"   (needs Prisma's schema engine), or in SQL:\n` +
    `  UPDATE _prisma_migrations SET rolled_back_at = now() WHERE migration_name = ${quoteLiteral(name)} ` +
    'AND finished_at IS NULL AND rolled_back_at IS NULL;'
  );
}

function newClient(connectionString: string): pg.Client {
  const client = new pg.Client({ connectionString });
  // A server-side disconnect outside a query is emitted as 'error'; unhandled, it
  // would crash the process instead of failing the pending query.
  client.on('error', () => {});
  return client;
}

function databaseNameOf(databaseUrl: string): string {
  const url = new URL(databaseUrl);
  const name = decodeURIComponent(url.pathname.replace(/^\//, ''));
  // libpq's rule: no database in the URL means the one named after the user.
  return name || decodeURIComponent(url.username) || 'postgres';
}

/** The same URL (credentials, host, query parameters) pointing at another database. */
export function withDatabase(databaseUrl: string, database: string): string {
  const url = new URL(databaseUrl);
  url.pathname = `/${encodeURIComponent(database)}`;
  return url.toString();
}

export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

function pgCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
