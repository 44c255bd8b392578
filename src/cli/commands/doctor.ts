import type { Command } from 'commander';
import { Cluster } from 'ioredis';
import pg from 'pg';
import type { CheckResult } from '../../cloudflare/access-check.js';
import { type BootConfig, type Config, ConfigError, hasTeamRule, loadBootConfig, migrationDatabaseUrl } from '../../config/env.js';
import { migrationStatus } from '../../db/migrate.js';
import { startServices, type ServicesDescription, type StartedServices } from '../../dev-services/dev-services.js';
import { redactUrl } from '../../logging/redact-url.js';
import { createRedisClient, describeRedisTarget } from '../../plugins/redis.js';
import type { RedisClient } from '../../redis/redis-client.js';
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
  let boot: BootConfig;
  try {
    boot = loadBootConfig(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return [
      { name: 'configuration', status: 'fail', message: error.problems.join('; '), fix: 'correct those variables (.env.example documents every one)' },
      ...['database', 'migrations', 'redis', 'cloudflare'].map((name): CheckResult => ({ name, status: 'skipped', message: 'skipped: the configuration is invalid' })),
    ];
  }
  const checks: CheckResult[] = [{ name: 'configuration', status: 'ok', message: describeConfig(boot) }];
  for (const warning of boot.warnings) {
    checks.push({ name: 'configuration warning', status: 'warn', message: warning, fix: 'set the variables it names: with NODE_ENV=production the broker refuses to start without them' });
  }
  if (boot.jwt.isDevelopmentSecret) {
    checks.push({
      name: 'jwt secret',
      status: 'warn',
      message: 'JWT_SECRET is not set, so tokens are signed with a well-known development secret: anyone can mint them',
      fix: 'set JWT_SECRET to at least 32 random characters',
    });
  }
  // Without DATABASE_URL or REDIS_URL, the stores `npm start` would use: the embedded
  // PostgreSQL and the private Redis, used if running, else started for the check.
  let services: StartedServices;
  try {
    services = await startServices(boot);
  } catch (error) {
    return [
      ...checks,
      { name: 'stores', status: 'fail', message: `cannot start the development PostgreSQL or Redis: ${describeError(error)}`, fix: 'set DATABASE_URL and REDIS_URL, or install what the message names' },
      ...['database', 'migrations', 'redis'].map((name): CheckResult => ({ name, status: 'skipped', message: 'skipped: no store to check' })),
      ...(await checkCloudflare(boot, options)),
    ];
  }
  try {
    const { config, description } = services;
    const [database, redis, cloudflare] = await Promise.all([checkDatabase(config, description), checkRedis(config, description), checkCloudflare(config, options)]);
    return [...checks, ...database, redis, ...cloudflare];
  } finally {
    await services.stop();
  }
}

/** How a check names where a store's data is, when the broker runs it itself. */
function storeNote(store: ServicesDescription['postgres'] | ServicesDescription['redis']): string {
  if (store.source === 'given' || store.source === 'unused') return '';
  return ` (${store.source === 'embedded' ? 'embedded' : 'private'}, data in ${store.dataDir}${store.reused ? ', already running' : ', started for this check'})`;
}

function describeConfig(config: BootConfig): string {
  const cloudflare = config.cloudflare.mode === 'emulator'
    ? 'no Cloudflare settings (development: the built-in emulator)'
    : config.cloudflare.accounts.map((a) => `Cloudflare account ${a.name === a.accountId ? a.accountId : `${a.name} (${a.accountId})`}, zone ${a.zoneId}, ${a.tunnelDomain}, up to ${a.maxTunnels} tunnels`).join('; ');
  return `valid (NODE_ENV=${config.env}, BROKER_ROLE=${config.role}, TUNNEL_DOMAIN=${config.tunnels.domain}, ${cloudflare})`;
}

async function checkDatabase(config: Config, description: ServicesDescription): Promise<CheckResult[]> {
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
  const database: CheckResult = { name: 'database', status: 'ok', message: `PostgreSQL ${version} at ${where}${storeNote(description.postgres)}` };
  try {
    return [database, migrationsCheck(await migrationStatus({ databaseUrl: migrationDatabaseUrl(config) }))];
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

async function checkRedis(config: Config, description: ServicesDescription): Promise<CheckResult> {
  const where = describeRedisTarget(config.redis);
  // A probe, not the broker's client: one attempt, no reconnect loop.
  const redis = createRedisClient({ ...config.redis, keyPrefix: '' }, { connectTimeout: PROBE_TIMEOUT_MS, maxRetriesPerRequest: 0, retryStrategy: () => null, sentinelRetryStrategy: () => null, failoverDetector: false });
  // connect() rejects with a bare "Connection is closed"; the reason arrives as an 'error' event.
  let cause: unknown;
  redis.on('error', (error) => {
    cause ??= error;
  });
  try {
    await redis.connect();
    const info = await redis.info('server');
    const version = /redis_version:(\S+)/.exec(info)?.[1] ?? '?';
    const found = `Redis ${version} at ${where} (key prefix ${JSON.stringify(config.redis.keyPrefix)})${storeNote(description.redis)}`;
    const policies = await evictionPolicies(redis);
    const evicting = policies.filter((p) => p !== 'noeviction' && p !== 'unknown');
    if (evicting.length > 0) {
      return {
        name: 'redis',
        status: 'warn',
        message: `${found}; maxmemory-policy is ${[...new Set(evicting)].join(', ')}: an evicted heartbeat reads as "not found" to an agent and hides its tunnel from the reaper`,
        fix: 'set maxmemory-policy noeviction (on every primary of a cluster): a full Redis then refuses writes, which the broker answers with 503',
      };
    }
    return { name: 'redis', status: 'ok', message: `${found}${policies.includes('unknown') ? '; maxmemory-policy could not be read (CONFIG is disabled): it must be noeviction' : ''}` };
  } catch (error) {
    const message = describeError(cause ?? error);
    const fix = /NOAUTH|WRONGPASS|invalid password/i.test(message) ? 'check the password in REDIS_URL' : 'start Redis, or point REDIS_URL at it';
    return { name: 'redis', status: 'fail', message: `cannot use ${where}: ${message}`, fix };
  } finally {
    redis.disconnect();
  }
}

/** Each primary's maxmemory-policy ('unknown' where CONFIG is refused, as on some managed services). */
async function evictionPolicies(redis: RedisClient): Promise<string[]> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  return Promise.all(nodes.map(async (node) => {
    const reply = await node.config('GET', 'maxmemory-policy').catch(() => []);
    return String((reply as string[])[1] ?? 'unknown');
  }));
}

async function checkCloudflare(config: BootConfig, options: { createTeamGate?: boolean }): Promise<CheckResult[]> {
  if (config.cloudflare.mode === 'emulator') {
    return [{
      name: 'cloudflare',
      status: 'warn',
      message: 'not configured: `npm start` uses its built-in emulator and no hostname routes anywhere',
      fix: 'set CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_ZONE_ID and TUNNEL_DOMAIN (or CLOUDFLARE_ACCOUNTS for several accounts)',
    }];
  }
  // Loaded only when there is a Cloudflare to check: the SDK is most of the CLI's start-up time.
  const [{ checkCloudflareAccess }, { createCloudflareClient }, { accountConfig }] = await Promise.all([
    import('../../cloudflare/access-check.js'),
    import('../../cloudflare/cloudflare-client.js'),
    import('../../cloudflare/cloudflare-accounts.js'),
  ]);
  const { accounts } = config.cloudflare;
  // Every account, each with its own token: one that fails says which.
  const perAccount = await Promise.all(accounts.map(async (account) => {
    const cloudflare = accountConfig(config.cloudflare, account);
    // Unmetered and without retries: four reads, each answered or failed at once.
    const client = createCloudflareClient({ ...cloudflare, maxRetries: 0, timeoutMs: Math.min(cloudflare.timeoutMs, PROBE_TIMEOUT_MS * 2) });
    const results = await checkCloudflareAccess(client, cloudflare, account.tunnelDomain);
    // Cloudflare Access (docs/access.md): checked when a team rule is configured.
    if (!hasTeamRule(config.access) || results.some((r) => r.name === 'cloudflare token' && r.status === 'fail')) return results;
    const [{ checkAccessGates }, { default: pino }] = await Promise.all([import('../../cloudflare/access-gate-checks.js'), import('pino')]);
    return [...results, ...(await checkAccessGates(client, cloudflare, config.access, account.tunnelDomain, pino({ level: 'silent' }), options))];
  }));
  if (accounts.length === 1) return perAccount[0]!;
  return perAccount.flatMap((results, i) => results.map((r) => ({ ...r, name: `${r.name} [${accounts[i]!.name}]` })));
}
