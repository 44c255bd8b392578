import type { Command } from 'commander';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { CheckResult } from '../../cloudflare/access-check.js';
import { type Config, ConfigError, hasTeamRule, loadConfig } from '../../config/env.js';
import { migrationStatus } from '../../db/migrate.js';
import { redactUrl } from '../../logging/redact-url.js';
import { CliError, type CliContext, describeError } from '../context.js';
import { json, plural } from '../output.js';

/** How long each dependency gets to answer: a doctor that hangs on a dead host is no help. */
const PROBE_TIMEOUT_MS = 5_000;

const SYMBOL: Record<CheckResult['status'], string> = { ok: '✓', fail: '✗', warn: '!', skipped: '-' };

/**
 * `doctor`: configuration, PostgreSQL, migrations, Redis and Cloudflare, one line each, with
 * what to fix. Read-only (it creates nothing anywhere) unless asked for `--create-team-gate`. Exits 1 if any check fails.
 */
export function registerDoctorCommand(program: Command, context: CliContext): void {
  program
    .command('doctor')
    .description('check the configuration, PostgreSQL, migrations, Redis and the Cloudflare credentials; one line each, with what to fix')
    .option('--json', 'print {ok, checks: [{name, status, message, fix?}]}')
    .option('--create-team-gate', 'with a team rule (ACCESS_TEAM_*): make or correct the wildcard Access team gate (the one write doctor makes)')
    .action(async (options: { json?: boolean; createTeamGate?: boolean }) => {
      const checks = await runChecks(context.env, { createTeamGate: Boolean(options.createTeamGate) });
      const failed = checks.filter((c) => c.status === 'fail').length;
      if (options.json) {
        context.stdout(json({ ok: failed === 0, checks }));
      } else {
        context.stdout(checks.map((c) => `${SYMBOL[c.status]} ${c.name}: ${c.message}${c.fix && c.status !== 'ok' ? ` — fix: ${c.fix}` : ''}\n`).join(''));
        context.stdout(failed === 0 ? 'all checks passed\n' : `${plural(failed, 'check')} failed\n`);
      }
      // The lines above already say what is wrong.
      if (failed > 0) throw new CliError('');
    });
}

export async function runChecks(env: Record<string, string | undefined>, options: { createTeamGate?: boolean } = {}): Promise<CheckResult[]> {
  let config: Config;
  try {
    config = loadConfig(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return [
      { name: 'configuration', status: 'fail', message: error.problems.join('; '), fix: 'correct those variables (.env.example documents every one)' },
      ...['database', 'migrations', 'redis', 'cloudflare'].map((name): CheckResult => ({ name, status: 'skipped', message: 'skipped: the configuration is invalid' })),
    ];
  }
  const checks: CheckResult[] = [{ name: 'configuration', status: 'ok', message: describeConfig(config) }];
  for (const warning of config.warnings) {
    checks.push({ name: 'configuration warning', status: 'warn', message: warning, fix: 'set the variables it names: with NODE_ENV=production the broker refuses to start without them' });
  }
  if (config.jwt.isDevelopmentSecret) {
    checks.push({
      name: 'jwt secret',
      status: 'warn',
      message: 'JWT_SECRET is not set, so tokens are signed with a well-known development secret: anyone can mint them',
      fix: 'set JWT_SECRET to at least 32 random characters',
    });
  }
  const [database, redis, cloudflare] = await Promise.all([checkDatabase(config), checkRedis(config), checkCloudflare(config, options)]);
  return [...checks, ...database, redis, ...cloudflare];
}

function describeConfig(config: Config): string {
  const cloudflare = config.cloudflare.mode === 'emulator'
    ? 'no Cloudflare settings (development: the built-in emulator)'
    : `Cloudflare account ${config.cloudflare.accountId}, zone ${config.cloudflare.zoneId}`;
  return `valid (NODE_ENV=${config.env}, BROKER_ROLE=${config.role}, TUNNEL_DOMAIN=${config.tunnels.domain}, ${cloudflare})`;
}

async function checkDatabase(config: Config): Promise<CheckResult[]> {
  const where = redactUrl(config.databaseUrl);
  const client = new pg.Client({ connectionString: config.databaseUrl, connectionTimeoutMillis: PROBE_TIMEOUT_MS });
  // A server-side disconnect would otherwise be an uncaught 'error' event.
  client.on('error', () => {});
  let version: string;
  try {
    await client.connect();
    version = (await client.query<{ server_version: string }>('SHOW server_version')).rows[0]?.server_version ?? '?';
  } catch (error) {
    const code = (error as { code?: string }).code;
    const fix = code === '3D000'
      ? 'run `tunnel-broker db migrate`, which creates the database and its tables'
      : code === '28P01' || code === '28000'
        ? 'check the user and password in DATABASE_URL'
        : 'start PostgreSQL, or point DATABASE_URL at it';
    return [
      { name: 'database', status: 'fail', message: `cannot use ${where}: ${describeError(error)}`, fix },
      { name: 'migrations', status: 'skipped', message: 'skipped: the database is not reachable' },
    ];
  } finally {
    await client.end().catch(() => {});
  }
  const database: CheckResult = { name: 'database', status: 'ok', message: `PostgreSQL ${version} at ${where}` };
  try {
    return [database, migrationsCheck(await migrationStatus({ databaseUrl: config.databaseUrl }))];
  } catch (error) {
    return [database, { name: 'migrations', status: 'fail', message: `cannot read the migration history: ${describeError(error)}` }];
  }
}

function migrationsCheck(status: Awaited<ReturnType<typeof migrationStatus>>): CheckResult {
  const name = 'migrations';
  if (status.failed.length > 0) {
    return {
      name,
      status: 'fail',
      message: `failed migration(s) block every later one: ${status.failed.join(', ')}`,
      fix: '`tunnel-broker db migrate` prints how to mark the attempt rolled back; then run it again',
    };
  }
  if (status.pending.length > 0) {
    return { name, status: 'fail', message: `${status.pending.length} pending: ${status.pending.join(', ')}`, fix: 'run `tunnel-broker db migrate`' };
  }
  const notes = [
    status.notInFolder.length > 0 ? `applied by a newer build: ${status.notInFolder.join(', ')}` : '',
    status.modified.length > 0 ? `edited since they were applied: ${status.modified.join(', ')}` : '',
  ].filter(Boolean);
  if (notes.length > 0) {
    return { name, status: 'warn', message: `${status.applied.length} applied, none pending; ${notes.join('; ')}`, fix: 'run the newest build, and put schema changes in new migrations' };
  }
  return { name, status: 'ok', message: `${status.applied.length} applied, none pending` };
}

async function checkRedis(config: Config): Promise<CheckResult> {
  const where = redactUrl(config.redis.url);
  // A probe, not the broker's client: one attempt, no reconnect loop.
  const redis = new Redis(config.redis.url, { lazyConnect: true, connectTimeout: PROBE_TIMEOUT_MS, maxRetriesPerRequest: 0, retryStrategy: () => null });
  // connect() rejects with a bare "Connection is closed"; the reason arrives as an 'error' event.
  let cause: unknown;
  redis.on('error', (error) => {
    cause ??= error;
  });
  try {
    await redis.connect();
    const info = await redis.info('server');
    const version = /redis_version:(\S+)/.exec(info)?.[1] ?? '?';
    return { name: 'redis', status: 'ok', message: `Redis ${version} at ${where} (key prefix ${JSON.stringify(config.redis.keyPrefix)})` };
  } catch (error) {
    const message = describeError(cause ?? error);
    const fix = /NOAUTH|WRONGPASS|invalid password/i.test(message) ? 'check the password in REDIS_URL' : 'start Redis, or point REDIS_URL at it';
    return { name: 'redis', status: 'fail', message: `cannot use ${where}: ${message}`, fix };
  } finally {
    redis.disconnect();
  }
}

async function checkCloudflare(config: Config, options: { createTeamGate?: boolean }): Promise<CheckResult[]> {
  if (config.cloudflare.mode === 'emulator') {
    return [{
      name: 'cloudflare',
      status: 'warn',
      message: 'not configured: `npm start` uses its built-in emulator and no hostname routes anywhere',
      fix: 'set CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_ZONE_ID and TUNNEL_DOMAIN',
    }];
  }
  // Loaded only when there is a Cloudflare to check: the SDK is most of the CLI's start-up time.
  const [{ checkCloudflareAccess }, { createCloudflareClient }] = await Promise.all([
    import('../../cloudflare/access-check.js'),
    import('../../cloudflare/cloudflare-client.js'),
  ]);
  // Unmetered and without retries: four reads, each answered or failed at once.
  const client = createCloudflareClient({ ...config.cloudflare, maxRetries: 0, timeoutMs: Math.min(config.cloudflare.timeoutMs, PROBE_TIMEOUT_MS * 2) });
  const results = await checkCloudflareAccess(client, config.cloudflare, config.tunnels.domain);
  // Cloudflare Access (docs/access.md): checked when a team rule is configured.
  if (!hasTeamRule(config.access) || results.some((r) => r.name === 'cloudflare token' && r.status === 'fail')) return results;
  const [{ checkAccessGates }, { default: pino }] = await Promise.all([import('../../cloudflare/access-gate-checks.js'), import('pino')]);
  return [...results, ...(await checkAccessGates(client, config.cloudflare, config.access, config.tunnels.domain, pino({ level: 'silent' }), options))];
}
