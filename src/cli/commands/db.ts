import type { Command } from 'commander';
import { migrationDatabaseUrl } from '../../config/env.js';
import { MigrationError, runMigrations } from '../../db/migrate.js';
import { redactUrl } from '../../logging/redact-url.js';
import { CliError, type CliContext, cliLogger, describeError, type GlobalOptions, loadCliConfig, withServices } from '../context.js';
import { json } from '../output.js';

/** `db migrate`: the runner `npm start` and the compose `migrate` service use. */
export function registerDbCommands(program: Command, context: CliContext): void {
  const db = program.command('db').description('the database');
  db.command('migrate')
    .description('apply pending migrations to DATABASE_URL, or to the embedded PostgreSQL without it (creating the database if missing)')
    .option('--json', 'print {applied, alreadyApplied, createdDatabase}')
    .action(async (options: { json?: boolean }, command: Command) => {
      const { logLevel } = command.optsWithGlobals<GlobalOptions>();
      const boot = loadCliConfig(context);
      const { database, result } = await withServices(boot, async (config) => {
        const database = redactUrl(migrationDatabaseUrl(config));
        try {
          return { database, result: await runMigrations({ databaseUrl: migrationDatabaseUrl(config), logger: cliLogger(config, logLevel, context) }) };
        } catch (error) {
          const heading = error instanceof MigrationError ? `migration failed (${error.code})` : 'migration failed';
          throw new CliError(`${heading} on ${database}:\n${describeError(error)}`);
        }
      }, { redis: false });
      if (options.json) {
        context.stdout(json(result));
        return;
      }
      const created = result.createdDatabase ? `created the database; ` : '';
      context.stdout(result.applied.length === 0
        ? `${database} is up to date (${result.alreadyApplied.length} migrations applied)\n`
        : `${created}applied ${result.applied.length} migration(s) to ${database}: ${result.applied.join(', ')}\n`);
    });
}
