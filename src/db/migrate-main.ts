// `npm run db:migrate`: applies prisma/migrations to DATABASE_URL (or, without it, to the
// embedded PostgreSQL that `npm start` uses) with the pg-based runner, because `prisma
// migrate deploy` needs a native engine that is not always installable. Exit code 0 when
// the database is up to date, 1 otherwise.
import { type BootConfig, ConfigError, loadBootConfig, migrationDatabaseUrl } from '../config/env.js';
import { logServices, startServices, type StartedServices } from '../dev-services/dev-services.js';
import { createLogger } from '../logging/logger.js';
import { redactUrl } from '../logging/redact-url.js';
import { MigrationError, runMigrations } from './migrate.js';

async function main(): Promise<number> {
  let boot: BootConfig;
  try {
    boot = loadBootConfig(process.env);
  } catch (error) {
    // Before a logger exists; ConfigError already lists every bad variable.
    process.stderr.write(`db:migrate: ${error instanceof ConfigError ? error.message : describe(error)}\n`);
    return 1;
  }
  const logger = createLogger(boot);
  let services: StartedServices;
  try {
    services = await startServices(boot, { redis: false });
  } catch (error) {
    process.stderr.write(`db:migrate: ${describe(error)}\n`);
    return 1;
  }
  logServices(logger, services.description);
  const { config } = services;
  const database = redactUrl(migrationDatabaseUrl(config));
  try {
    const result = await runMigrations({ databaseUrl: migrationDatabaseUrl(config), logger });
    logger.info(
      { database, applied: result.applied, alreadyApplied: result.alreadyApplied.length, createdDatabase: result.createdDatabase },
      result.applied.length === 0
        ? 'database is up to date; no migrations applied'
        : `applied ${result.applied.length} migration(s): ${result.applied.join(', ')}`,
    );
    return 0;
  } catch (error) {
    logger.error({ database, err: error }, 'migration failed');
    // The log line may be JSON on stdout; a person or a CI step reads stderr.
    const heading = error instanceof MigrationError ? `db:migrate failed (${error.code})` : 'db:migrate failed';
    process.stderr.write(`${heading} on ${database}:\n${describe(error)}\n`);
    return 1;
  } finally {
    await services.stop();
  }
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // Connection failures (ECONNREFUSED and friends) arrive as AggregateError with an
  // empty message; the useful text is in the parts.
  if (error instanceof AggregateError && error.message === '') {
    return error.errors.map((e: unknown) => (e instanceof Error ? e.message : String(e))).join('; ');
  }
  return error.message;
}

// Set the code and let the event loop drain instead of process.exit(), so the
// logger's asynchronous transport (pino-pretty) gets to flush.
process.exitCode = await main();
