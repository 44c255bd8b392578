import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Type, { type Static } from 'typebox';
import { parsePublicKeyPem } from '../auth/provider-keys.js';
import { redactUrl } from '../logging/redact-url.js';
import { validateAgainst } from './schema-validator.js';

/**
 * The one environment schema. Everything the broker can be told comes through here,
 * is validated once at boot, and is handed on as a typed `Config`; nothing deeper
 * in the code reads `process.env`.
 */

const Int = (opts: { default?: number; minimum?: number; maximum?: number }) =>
  Type.Integer({ minimum: 1, ...opts });

export const DEFAULT_RESERVED_SLUGS = [
  // infrastructure and mail
  'www', 'api', 'admin', 'mail', 'smtp', 'imap', 'pop', 'pop3', 'mx', 'ns', 'ns1', 'ns2', 'dns',
  'ftp', 'sftp', 'ssh', 'vpn', 'proxy', 'gateway', 'cdn', 'static', 'assets', 'media', 'img',
  'autodiscover', 'autoconfig', 'webmail', 'email', 'postmaster', 'hostmaster', 'webmaster', 'abuse',
  'root', 'localhost', 'broker', 'tunnel', 'tunnels', 'metrics', 'status', 'health', 'docs',
  // names people trust: the usual phishing bait
  'login', 'signin', 'sign-in', 'signup', 'auth', 'oauth', 'sso', 'account', 'accounts', 'id',
  'secure', 'security', 'verify', 'verification', 'password', 'reset', 'billing', 'pay', 'payment',
  'payments', 'checkout', 'wallet', 'bank', 'support', 'help', 'helpdesk', 'portal', 'dashboard',
  'console', 'app', 'apps', 'my', 'internal', 'intranet', 'staff', 'hr', 'it', 'update', 'updates',
  'download', 'downloads', 'official', 'cloudflare', 'google', 'microsoft', 'apple', 'paypal',
  'github', 'office', 'outlook',
] as const;

/** pg's own pool size, a connect timeout and a statement timeout (see DATABASE_POOL_MAX and friends). */
export const DEFAULT_DATABASE_POOL = { max: 10, connectTimeoutMs: 5_000, statementTimeoutMs: 15_000 } as const;

export const EnvSchema = Type.Object({
  NODE_ENV: Type.Union([Type.Literal('development'), Type.Literal('production'), Type.Literal('test')], {
    default: 'development',
  }),
  PORT: Int({ default: 3000, maximum: 65535 }),
  HOST: Type.String({ default: '127.0.0.1', minLength: 1 }),
  /** Which loops this process runs: the HTTP API, the reaper, or both (`all`). */
  BROKER_ROLE: Type.Union([Type.Literal('all'), Type.Literal('api'), Type.Literal('reaper')], { default: 'all' }),
  /** Unset outside production: an embedded PostgreSQL with its data in DEV_DATA_DIR. */
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  /**
   * Migrations take a session-level advisory lock, which a pooler in transaction mode
   * (PgBouncer) cannot keep: set this to a direct connection when DATABASE_URL goes through one.
   */
  DIRECT_DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  /** Connections per broker process; N brokers need N × this (+1 each while migrating) within max_connections. */
  DATABASE_POOL_MAX: Int({ default: DEFAULT_DATABASE_POOL.max, maximum: 1000 }),
  DATABASE_CONNECT_TIMEOUT_MS: Int({ default: DEFAULT_DATABASE_POOL.connectTimeoutMs, minimum: 100, maximum: 120_000 }),
  /** Server-side statement_timeout of the broker's connections (a startup parameter); 0 sends none (set it on the role or in the pooler instead). */
  DATABASE_STATEMENT_TIMEOUT_MS: Type.Integer({ default: DEFAULT_DATABASE_POOL.statementTimeoutMs, minimum: 0, maximum: 3_600_000 }),
  /** Unset outside production: a private redis-server from the PATH, its files in DEV_DATA_DIR. */
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  /** Where the embedded PostgreSQL and the private Redis keep their files (default: .data in the project). */
  DEV_DATA_DIR: Type.Optional(Type.String({ minLength: 1 })),
  REDIS_KEY_PREFIX: Type.String({ default: 'tb:', maxLength: 64 }),
  /**
   * Sentinels (host:port,host:port,...) that name the primary, followed across failovers.
   * REDIS_URL then only gives the credentials, database and scheme (rediss:// for TLS).
   */
  REDIS_SENTINELS: Type.Optional(Type.String({ pattern: '^[^,:\\s]+:\\d{1,5}(,[^,:\\s]+:\\d{1,5})*$' })),
  /** The primary's name in the sentinels' configuration (`sentinel monitor <name> ...`). */
  REDIS_SENTINEL_NAME: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  REDIS_SENTINEL_PASSWORD: Type.Optional(Type.String({ minLength: 1 })),
  /**
   * Seed nodes of a Redis Cluster (host:port,...; or redis[s]://[user:password@]host:port,... for
   * credentials and TLS, the same for every node). The broker then uses the cluster and ignores REDIS_URL.
   */
  REDIS_CLUSTER_NODES: Type.Optional(Type.String({ minLength: 3, maxLength: 4000 })),
  JWT_SECRET: Type.Optional(Type.String({ minLength: 32 })),
  /** Also accept RS256/ES256 access tokens from an identity provider: a PEM public key, or a JWKS URL. */
  JWT_PUBLIC_KEY: Type.Optional(Type.String({ minLength: 1 })),
  JWT_JWKS_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  JWT_ISSUER: Type.Optional(Type.String({ minLength: 1 })),
  JWT_AUDIENCE: Type.Optional(Type.String({ minLength: 1 })),
  /** The claim that carries the user id. */
  JWT_USER_CLAIM: Type.String({ default: 'sub', minLength: 1, maxLength: 100 }),
  /** Bearer token required by GET /metrics when set. */
  METRICS_TOKEN: Type.Optional(Type.String({ minLength: 16 })),
  CLOUDFLARE_API_TOKEN: Type.Optional(Type.String({ minLength: 1 })),
  CLOUDFLARE_ACCOUNT_ID: Type.Optional(Type.String({ minLength: 1, maxLength: 32 })),
  CLOUDFLARE_ZONE_ID: Type.Optional(Type.String({ minLength: 1, maxLength: 32 })),
  TUNNEL_DOMAIN: Type.Optional(
    Type.String({ pattern: '^(?=.{1,190}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$' }),
  ),
  CLOUDFLARE_BASE_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  /**
   * More than one Cloudflare account: a JSON array of {name?, apiToken, accountId, zoneId,
   * tunnelDomain, maxTunnels?, baseUrl?}, instead of CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID,
   * CLOUDFLARE_ZONE_ID and TUNNEL_DOMAIN. The first is the primary (rows from before accounts
   * were recorded are its). CLOUDFLARE_ACCOUNTS_FILE names a file holding the same JSON.
   */
  CLOUDFLARE_ACCOUNTS: Type.Optional(Type.String({ minLength: 1 })),
  CLOUDFLARE_ACCOUNTS_FILE: Type.Optional(Type.String({ minLength: 1 })),
  /** Tunnels the broker keeps in one account at most (Cloudflare allows 1,000); an account's own maxTunnels overrides it. */
  CLOUDFLARE_MAX_TUNNELS: Int({ default: 1000, maximum: 100_000 }),
  CLOUDFLARE_TIMEOUT_MS: Int({ default: 10_000, minimum: 100, maximum: 120_000 }),
  CLOUDFLARE_MAX_RETRIES: Type.Integer({ default: 2, minimum: 0, maximum: 10 }),
  /** Account-wide Cloudflare request budget, shared through Redis by every instance (the API allows 1200 per 5 minutes per token). */
  CLOUDFLARE_BUDGET_REQUESTS: Int({ default: 1200, maximum: 1_000_000 }),
  CLOUDFLARE_BUDGET_WINDOW_SECONDS: Int({ default: 300, maximum: 86_400 }),
  /** Upstream tunnel names are `<prefix><row id>`, which is how the broker knows its own. */
  TUNNEL_NAME_PREFIX: Type.String({ default: 'tb-', pattern: '^[a-z0-9][a-z0-9-]{0,30}$' }),
  HEARTBEAT_INTERVAL_SECONDS: Int({ default: 20, maximum: 3600 }),
  TUNNEL_TTL_SECONDS: Int({ default: 60, maximum: 86_400 }),
  /**
   * Whoever creates or tears down a tunnel holds a lease on it this long, renewed every third
   * of it while the work goes on; if the holder dies, another broker takes over once it lapses.
   */
  TUNNEL_LEASE_SECONDS: Int({ default: 5, maximum: 60 }),
  /** Heartbeats one tunnel may send per minute; counted inside the heartbeat's one Redis call. */
  HEARTBEAT_MAX_PER_MINUTE: Int({ default: 60, maximum: 1_000_000 }),
  REAPER_INTERVAL_SECONDS: Int({ default: 5, maximum: 3600 }),
  /** How often upstream is compared with the database to remove orphans, and how old an orphan must be. */
  RECONCILE_INTERVAL_SECONDS: Int({ default: 300, maximum: 86_400 }),
  RECONCILE_GRACE_SECONDS: Int({ default: 600, maximum: 7 * 86_400 }),
  /** How long an Idempotency-Key on POST /v1/tunnels replays its first response. */
  IDEMPOTENCY_TTL_SECONDS: Int({ default: 86_400, maximum: 7 * 86_400 }),
  MAX_TUNNELS_PER_USER: Int({ default: 5, maximum: 1000 }),
  CREATE_RATE_LIMIT_PER_MINUTE: Int({ default: 20, maximum: 100_000 }),
  /** Per user and per read route (GET /v1/tunnels, GET /v1/tunnels/:id): far above what a person or an agent does. */
  READ_RATE_LIMIT_PER_MINUTE: Int({ default: 120, maximum: 100_000 }),
  DELETE_RATE_LIMIT_PER_MINUTE: Int({ default: 60, maximum: 100_000 }),
  /** Comma-separated; replaces the built-in list. */
  RESERVED_SLUGS: Type.Optional(Type.String()),
  LOG_LEVEL: Type.Union(
    [Type.Literal('fatal'), Type.Literal('error'), Type.Literal('warn'), Type.Literal('info'), Type.Literal('debug'), Type.Literal('trace'), Type.Literal('silent')],
    { default: 'info' },
  ),
  LOG_PRETTY: Type.Optional(Type.Boolean()),
  /** Cloudflare Access: comma-separated email domains that make up "the team". */
  ACCESS_TEAM_EMAIL_DOMAINS: Type.Optional(Type.String()),
  /** Cloudflare Access: comma-separated addresses added to the team. */
  ACCESS_TEAM_EMAILS: Type.Optional(Type.String()),
  /** Who may open a tunnel created without `access`: `team` by default when a team rule is set, else `public`. */
  ACCESS_DEFAULT_MODE: Type.Optional(Type.Union([Type.Literal('team'), Type.Literal('public')])),
  /** Whether users may ask for `public` tunnels. */
  ACCESS_ALLOW_PUBLIC: Type.Boolean({ default: true }),
  /** How long an Access login lasts (Cloudflare's session_duration: 30m, 6h, 24h, …). */
  ACCESS_SESSION_DURATION: Type.String({ default: '24h', pattern: '^[0-9]+(\\.[0-9]+)?(s|m|h)$' }),
});

export type Env = Static<typeof EnvSchema>;

export const DEV_JWT_SECRET = 'development-only-secret-do-not-use-in-production!';
export const EMULATOR_ACCOUNT_ID = '0123456789abcdef0123456789abcdef';
export const EMULATOR_ZONE_ID = 'fedcba9876543210fedcba9876543210';
export const EMULATOR_API_TOKEN = 'emulator-token';
export const EMULATOR_TUNNEL_DOMAIN = 'tunnels.localhost';

/** One Cloudflare account the broker places tunnels in (see CLOUDFLARE_ACCOUNTS). */
export interface CloudflareAccount {
  /** Its name in metrics, logs and `doctor`: configured, or the account id. Never the token. */
  name: string;
  apiToken: string;
  accountId: string;
  zoneId: string;
  /** Hostnames in this account are `<slug>.<tunnelDomain>`; the zone must be this account's. */
  tunnelDomain: string;
  /** Live tunnels the broker keeps here at most. */
  maxTunnels: number;
  /** The API's base URL for this account (the emulator in tests); CLOUDFLARE_BASE_URL otherwise. */
  baseUrl: string | undefined;
}

export interface CloudflareConfig {
  /** `emulator`: no Cloudflare settings were given outside production; server.ts starts the built-in emulator. */
  mode: 'remote' | 'emulator';
  /** The primary account's (accounts[0]): what single-account code and tools use. */
  apiToken: string;
  accountId: string;
  zoneId: string;
  baseUrl: string | undefined;
  /** Every account, the primary first. One entry in the single-account case. */
  accounts: CloudflareAccount[];
  timeoutMs: number;
  maxRetries: number;
  tunnelNamePrefix: string;
  budget: { requests: number; windowSeconds: number };
}

export interface Config {
  env: Env['NODE_ENV'];
  role: Env['BROKER_ROLE'];
  http: { host: string; port: number };
  databaseUrl: string;
  /** What migrations connect to: DIRECT_DATABASE_URL, else DATABASE_URL (see migrationDatabaseUrl). */
  directDatabaseUrl: string | undefined;
  databasePool: DatabasePoolConfig;
  redis: RedisConfig;
  /** Where the embedded PostgreSQL and the private Redis live when DATABASE_URL or REDIS_URL is not set. */
  devServices: { dataDir: string };
  jwt: {
    secret: string;
    isDevelopmentSecret: boolean;
    publicKey: string | undefined;
    jwksUrl: string | undefined;
    issuer: string | undefined;
    audience: string | undefined;
    userClaim: string;
  };
  metrics: { token: string | undefined };
  cloudflare: CloudflareConfig;
  tunnels: {
    domain: string;
    heartbeatIntervalSeconds: number;
    ttlSeconds: number;
    leaseSeconds: number;
    heartbeatMaxPerMinute: number;
    maxPerUser: number;
    createRateLimitPerMinute: number;
    readRateLimitPerMinute: number;
    deleteRateLimitPerMinute: number;
    reservedSlugs: ReadonlySet<string>;
  };
  reaper: { intervalSeconds: number };
  access: AccessConfig;
  reconcile: { intervalSeconds: number; graceSeconds: number };
  idempotency: { ttlSeconds: number };
  log: { level: Env['LOG_LEVEL']; pretty: boolean | undefined };
  /** Settings that are allowed here but unsafe in production: logged at boot, shown by `doctor`. */
  warnings: string[];
}

/**
 * The config as the environment gives it, before the stores are resolved: DATABASE_URL and
 * REDIS_URL may be unset (development), and src/dev-services/dev-services.ts fills them in.
 */
export type BootConfig = Omit<Config, 'databaseUrl' | 'redis'> & {
  databaseUrl: string | undefined;
  redis: Omit<RedisConfig, 'url'> & { url: string | undefined };
};

export interface RedisConfig {
  /** The server, or with sentinels only its credentials, database and scheme. */
  url: string;
  keyPrefix: string;
  sentinel: { nodes: { host: string; port: number }[]; name: string; password: string | undefined } | undefined;
  /** A Redis Cluster's seed nodes (REDIS_CLUSTER_NODES); `url` then only names the first, for messages. */
  cluster: { nodes: { host: string; port: number }[]; tls: boolean; username: string | undefined; password: string | undefined } | undefined;
}

/** The project's own .data folder, wherever the broker is started from. */
export const DEFAULT_DEV_DATA_DIR = fileURLToPath(new URL('../../.data', import.meta.url));

export interface DatabasePoolConfig {
  max: number;
  connectTimeoutMs: number;
  /** 0: none sent. */
  statementTimeoutMs: number;
}

/** Where migrations run: a direct connection when DATABASE_URL goes through a transaction-mode pooler. */
export function migrationDatabaseUrl(config: Pick<Config, 'databaseUrl' | 'directDatabaseUrl'>): string {
  return config.directDatabaseUrl ?? config.databaseUrl;
}

/** Cloudflare Access in front of tunnel URLs (see docs/access.md). */
export interface AccessConfig {
  /** The team rule: email domains and addresses; both empty means no team rule (no gate unless asked for `emails`). */
  teamEmailDomains: string[];
  teamEmails: string[];
  defaultMode: 'team' | 'public';
  allowPublic: boolean;
  sessionDuration: string;
}

/** Whether a team rule is configured: then the broker keeps a wildcard team gate over TUNNEL_DOMAIN. */
export function hasTeamRule(access: Pick<AccessConfig, 'teamEmailDomains' | 'teamEmails'>): boolean {
  return access.teamEmailDomains.length > 0 || access.teamEmails.length > 0;
}

const EMAIL_RE = /^[^\s@,]+@[^\s@,]+\.[^\s@,]+$/;
const EMAIL_DOMAIN_RE = /^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A plausible email address (what Access's `email` rule takes); lower-cased by the caller. */
export function isEmailAddress(value: string): boolean {
  return value.length <= 254 && EMAIL_RE.test(value);
}

function commaList(value: string | undefined): string[] {
  return value === undefined ? [] : [...new Set(value.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean))];
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

const CLOUDFLARE_VARS = ['CLOUDFLARE_API_TOKEN', 'CLOUDFLARE_ACCOUNT_ID', 'CLOUDFLARE_ZONE_ID', 'TUNNEL_DOMAIN'] as const;

/**
 * Validates the environment and derives the config, for code that is given its stores
 * (tests, tools): DATABASE_URL and REDIS_URL must both be set. Throws ConfigError naming every
 * bad variable.
 */
export function loadConfig(source: Record<string, string | undefined>): Config {
  const boot = loadBootConfig(source);
  const problems: string[] = [];
  if (boot.databaseUrl === undefined) problems.push('DATABASE_URL: required here');
  if (boot.redis.url === undefined) problems.push('REDIS_URL: required here');
  if (problems.length > 0 || boot.databaseUrl === undefined || boot.redis.url === undefined) throw new ConfigError(problems);
  return { ...boot, databaseUrl: boot.databaseUrl, redis: { ...boot.redis, url: boot.redis.url } };
}

/** Validates the environment and derives the boot config. Throws ConfigError naming every bad variable. */
export function loadBootConfig(source: Record<string, string | undefined>, readFile: (file: string) => string = readConfigFile): BootConfig {
  const known = Object.keys(EnvSchema.properties);
  const raw: Record<string, unknown> = {};
  for (const key of known) {
    const value = source[key];
    // An empty variable (FOO= in a .env file) means "not set", as in most dotenv tools.
    if (value !== undefined && value.trim() !== '') raw[key] = value.trim();
  }
  const converted: Record<string, unknown> = { ...raw };
  const problems: string[] = [];
  const errors = validateAgainst(EnvSchema, converted);
  if (errors.length > 0) {
    for (const error of errors) {
      const name = error.instancePath.replace(/^\//, '') || '(root)';
      const given = raw[name];
      problems.push(`${name}: ${error.message}${given === undefined ? '' : ` (got ${JSON.stringify(shownValue(name, given))})`}`);
    }
    throw new ConfigError(problems);
  }
  const env = converted as Env;

  if (env.TUNNEL_TTL_SECONDS <= env.HEARTBEAT_INTERVAL_SECONDS) {
    problems.push('TUNNEL_TTL_SECONDS: must be greater than HEARTBEAT_INTERVAL_SECONDS, or every tunnel is reaped between heartbeats');
  }
  const production = env.NODE_ENV === 'production';
  // The embedded PostgreSQL and the private Redis are for development: production names its stores.
  if (production && env.DATABASE_URL === undefined) problems.push('DATABASE_URL: required when NODE_ENV=production');
  if (production && env.REDIS_URL === undefined && env.REDIS_SENTINELS === undefined && env.REDIS_CLUSTER_NODES === undefined) {
    problems.push('REDIS_URL: required when NODE_ENV=production (or REDIS_SENTINELS, or REDIS_CLUSTER_NODES)');
  }
  const cluster = env.REDIS_CLUSTER_NODES === undefined ? undefined : clusterConfig(env.REDIS_CLUSTER_NODES);
  if (typeof cluster === 'string') problems.push(`REDIS_CLUSTER_NODES: ${cluster}`);
  if (cluster !== undefined && env.REDIS_SENTINELS !== undefined) problems.push('REDIS_CLUSTER_NODES, REDIS_SENTINELS: set one or the other (a Redis Cluster fails over by itself)');
  // Braces would make the prefix a hash tag and put every key in one slot.
  if (/[{}]/.test(env.REDIS_KEY_PREFIX)) problems.push('REDIS_KEY_PREFIX: must not contain { or } (Redis Cluster hash tags)');
  if ((env.REDIS_SENTINELS === undefined) !== (env.REDIS_SENTINEL_NAME === undefined)) {
    problems.push('REDIS_SENTINELS, REDIS_SENTINEL_NAME: set both (the sentinels and the name of the primary they watch) or neither');
  }
  if (env.REDIS_SENTINEL_PASSWORD !== undefined && env.REDIS_SENTINELS === undefined) problems.push('REDIS_SENTINEL_PASSWORD: set REDIS_SENTINELS as well');
  if (env.DIRECT_DATABASE_URL !== undefined && env.DATABASE_URL === undefined) {
    problems.push('DIRECT_DATABASE_URL: set DATABASE_URL as well (the direct URL is only for migrations)');
  }
  if (production && !env.JWT_SECRET) problems.push('JWT_SECRET: required when NODE_ENV=production (at least 32 characters)');
  // PEM keys arrive through env files with literal "\n" more often than not.
  const publicKeyPem = env.JWT_PUBLIC_KEY?.replace(/\\n/g, '\n');
  problems.push(...identityProviderProblems(env, publicKeyPem));
  const warnings: string[] = [];
  const unscoped = unscopedProviderProblem(env);
  // Fatal in production. Elsewhere a warning: a developer trying a provider out should not
  // have to register an audience first, and a development broker is not exposed.
  if (unscoped) (production ? problems : warnings).push(unscoped);
  if (cluster !== undefined && env.REDIS_URL !== undefined) warnings.push('REDIS_URL is ignored: REDIS_CLUSTER_NODES is set (put credentials and rediss:// in REDIS_CLUSTER_NODES)');

  const givenCloudflare = CLOUDFLARE_VARS.filter((k) => env[k] !== undefined);
  const listed = listedAccounts(env, readFile, problems);
  const useEmulator = !production && givenCloudflare.length === 0 && listed === undefined;
  if (listed !== undefined) {
    for (const key of givenCloudflare) problems.push(`${key}: set either CLOUDFLARE_ACCOUNTS (or CLOUDFLARE_ACCOUNTS_FILE) or the single-account variables, not both`);
  } else if (!useEmulator) {
    for (const key of CLOUDFLARE_VARS) {
      if (env[key] === undefined) {
        problems.push(
          production
            ? `${key}: required when NODE_ENV=production`
            : `${key}: required once any of ${CLOUDFLARE_VARS.join(', ')} is set (set none of them to use the built-in emulator)`,
        );
      }
    }
  }
  const teamEmailDomains = commaList(env.ACCESS_TEAM_EMAIL_DOMAINS).map((d) => d.replace(/^@/, ''));
  const teamEmails = commaList(env.ACCESS_TEAM_EMAILS);
  for (const d of teamEmailDomains) if (!EMAIL_DOMAIN_RE.test(d)) problems.push(`ACCESS_TEAM_EMAIL_DOMAINS: ${JSON.stringify(d)} is not a domain`);
  for (const e of teamEmails) if (!isEmailAddress(e)) problems.push(`ACCESS_TEAM_EMAILS: ${JSON.stringify(e)} is not an email address`);
  const teamRule = teamEmailDomains.length > 0 || teamEmails.length > 0;
  const defaultMode = env.ACCESS_DEFAULT_MODE ?? (teamRule ? 'team' : 'public');
  if (defaultMode === 'team' && !teamRule) problems.push('ACCESS_DEFAULT_MODE: team needs a team rule (ACCESS_TEAM_EMAIL_DOMAINS or ACCESS_TEAM_EMAILS)');
  if (defaultMode === 'public' && !env.ACCESS_ALLOW_PUBLIC) problems.push('ACCESS_DEFAULT_MODE: public while ACCESS_ALLOW_PUBLIC=false; set a team rule, or allow public tunnels');
  if (problems.length > 0) throw new ConfigError(problems);

  const reserved = env.RESERVED_SLUGS === undefined
    ? DEFAULT_RESERVED_SLUGS
    : env.RESERVED_SLUGS.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);

  const accounts: CloudflareAccount[] = listed ?? [{
    name: env.CLOUDFLARE_ACCOUNT_ID ?? EMULATOR_ACCOUNT_ID,
    apiToken: env.CLOUDFLARE_API_TOKEN ?? EMULATOR_API_TOKEN,
    accountId: env.CLOUDFLARE_ACCOUNT_ID ?? EMULATOR_ACCOUNT_ID,
    zoneId: env.CLOUDFLARE_ZONE_ID ?? EMULATOR_ZONE_ID,
    tunnelDomain: env.TUNNEL_DOMAIN ?? EMULATOR_TUNNEL_DOMAIN,
    maxTunnels: env.CLOUDFLARE_MAX_TUNNELS,
    baseUrl: env.CLOUDFLARE_BASE_URL,
  }];
  const primary = accounts[0]!;

  return {
    env: env.NODE_ENV,
    role: env.BROKER_ROLE,
    http: { host: env.HOST, port: env.PORT },
    databaseUrl: env.DATABASE_URL,
    directDatabaseUrl: env.DIRECT_DATABASE_URL,
    databasePool: { max: env.DATABASE_POOL_MAX, connectTimeoutMs: env.DATABASE_CONNECT_TIMEOUT_MS, statementTimeoutMs: env.DATABASE_STATEMENT_TIMEOUT_MS },
    // With sentinels and no REDIS_URL: no credentials, plain TCP.
    redis: redisConfig(env, cluster),
    devServices: { dataDir: env.DEV_DATA_DIR === undefined ? DEFAULT_DEV_DATA_DIR : path.resolve(env.DEV_DATA_DIR) },
    jwt: {
      secret: env.JWT_SECRET ?? DEV_JWT_SECRET,
      isDevelopmentSecret: env.JWT_SECRET === undefined,
      publicKey: publicKeyPem,
      jwksUrl: env.JWT_JWKS_URL,
      issuer: env.JWT_ISSUER,
      audience: env.JWT_AUDIENCE,
      userClaim: env.JWT_USER_CLAIM,
    },
    metrics: { token: env.METRICS_TOKEN },
    cloudflare: {
      mode: useEmulator ? 'emulator' : 'remote',
      apiToken: primary.apiToken,
      accountId: primary.accountId,
      zoneId: primary.zoneId,
      baseUrl: primary.baseUrl,
      accounts,
      timeoutMs: env.CLOUDFLARE_TIMEOUT_MS,
      maxRetries: env.CLOUDFLARE_MAX_RETRIES,
      tunnelNamePrefix: env.TUNNEL_NAME_PREFIX,
      budget: { requests: env.CLOUDFLARE_BUDGET_REQUESTS, windowSeconds: env.CLOUDFLARE_BUDGET_WINDOW_SECONDS },
    },
    tunnels: {
      domain: primary.tunnelDomain,
      heartbeatIntervalSeconds: env.HEARTBEAT_INTERVAL_SECONDS,
      ttlSeconds: env.TUNNEL_TTL_SECONDS,
      leaseSeconds: env.TUNNEL_LEASE_SECONDS,
      heartbeatMaxPerMinute: env.HEARTBEAT_MAX_PER_MINUTE,
      maxPerUser: env.MAX_TUNNELS_PER_USER,
      createRateLimitPerMinute: env.CREATE_RATE_LIMIT_PER_MINUTE,
      readRateLimitPerMinute: env.READ_RATE_LIMIT_PER_MINUTE,
      deleteRateLimitPerMinute: env.DELETE_RATE_LIMIT_PER_MINUTE,
      reservedSlugs: new Set(reserved),
    },
    reaper: { intervalSeconds: env.REAPER_INTERVAL_SECONDS },
    access: { teamEmailDomains, teamEmails, defaultMode, allowPublic: env.ACCESS_ALLOW_PUBLIC, sessionDuration: env.ACCESS_SESSION_DURATION },
    reconcile: { intervalSeconds: env.RECONCILE_INTERVAL_SECONDS, graceSeconds: env.RECONCILE_GRACE_SECONDS },
    idempotency: { ttlSeconds: env.IDEMPOTENCY_TTL_SECONDS },
    log: { level: env.LOG_LEVEL, pretty: env.LOG_PRETTY },
    warnings,
  };
}

function redisConfig(env: Env, cluster: RedisConfig['cluster'] | string | undefined): BootConfig['redis'] {
  if (cluster !== undefined && typeof cluster !== 'string') {
    const first = cluster.nodes[0]!;
    return { url: `${cluster.tls ? 'rediss' : 'redis'}://${first.host}:${first.port}`, keyPrefix: env.REDIS_KEY_PREFIX, sentinel: undefined, cluster };
  }
  // With sentinels and no REDIS_URL: no credentials, plain TCP.
  return { url: env.REDIS_URL ?? (env.REDIS_SENTINELS === undefined ? undefined : 'redis://'), keyPrefix: env.REDIS_KEY_PREFIX, sentinel: sentinelConfig(env), cluster: undefined };
}

/** REDIS_CLUSTER_NODES parsed, or what is wrong with it. */
function clusterConfig(value: string): NonNullable<RedisConfig['cluster']> | string {
  const nodes: { host: string; port: number }[] = [];
  const schemes = new Set<string>();
  let username: string | undefined;
  let password: string | undefined;
  for (const entry of value.split(',').map((e) => e.trim())) {
    let url: URL;
    try {
      url = new URL(/^rediss?:\/\//.test(entry) ? entry : `redis://${entry}`);
    } catch {
      return `${JSON.stringify(entry.replace(/\/\/[^@]*@/, '//***@'))} is not host:port or redis[s]://host:port`;
    }
    if (!url.hostname || !url.port || (url.pathname !== '' && url.pathname !== '/')) return `each node is host:port (with a port, no database: a cluster has only db 0)`;
    schemes.add(url.protocol);
    if (url.username) username = decodeURIComponent(url.username);
    if (url.password) password = decodeURIComponent(url.password);
    nodes.push({ host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port) });
  }
  if (schemes.size > 1) return 'use one scheme for every node (all redis:// or all rediss://)';
  return { nodes, tls: schemes.has('rediss:'), username, password };
}

function sentinelConfig(env: Env): RedisConfig['sentinel'] {
  if (env.REDIS_SENTINELS === undefined || env.REDIS_SENTINEL_NAME === undefined) return undefined;
  const nodes = env.REDIS_SENTINELS.split(',').map((node) => {
    const at = node.lastIndexOf(':');
    return { host: node.slice(0, at), port: Number(node.slice(at + 1)) };
  });
  return { nodes, name: env.REDIS_SENTINEL_NAME, password: env.REDIS_SENTINEL_PASSWORD };
}

/**
 * The identity provider settings must make sense together, and a bad key must stop the boot
 * rather than fail every request. One provider at a time: a second key belongs in the JWKS.
 */
function identityProviderProblems(env: Env, publicKeyPem: string | undefined): string[] {
  const problems: string[] = [];
  if (env.JWT_PUBLIC_KEY !== undefined && env.JWT_JWKS_URL !== undefined) {
    problems.push('JWT_PUBLIC_KEY, JWT_JWKS_URL: set one of them, not both (publish the extra key in the JWKS instead)');
  }
  if (publicKeyPem !== undefined) {
    try {
      parsePublicKeyPem(publicKeyPem);
    } catch (error) {
      problems.push(`JWT_PUBLIC_KEY: ${(error as Error).message}`);
    }
  }
  if (env.JWT_JWKS_URL !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(env.JWT_JWKS_URL);
    } catch {
      problems.push(`JWT_JWKS_URL: not a URL (got ${JSON.stringify(shownValue('JWT_JWKS_URL', env.JWT_JWKS_URL))})`);
    }
    // Keys fetched over plain HTTP could be swapped on the way: only on this machine is that safe.
    if (url && url.protocol !== 'https:' && !['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) {
      problems.push(`JWT_JWKS_URL: must be https (plain http only for a loopback host) (got ${JSON.stringify(shownValue('JWT_JWKS_URL', env.JWT_JWKS_URL))})`);
    }
  }
  // Without a provider these would silently check nothing: the broker's own tokens carry no
  // issuer or audience and always name the user in `sub`.
  if (env.JWT_PUBLIC_KEY === undefined && env.JWT_JWKS_URL === undefined) {
    for (const [name, set] of [['JWT_ISSUER', env.JWT_ISSUER !== undefined], ['JWT_AUDIENCE', env.JWT_AUDIENCE !== undefined], ['JWT_USER_CLAIM', env.JWT_USER_CLAIM !== 'sub']] as const) {
      if (set) problems.push(`${name}: applies to identity-provider tokens only; set JWT_PUBLIC_KEY or JWT_JWKS_URL as well, or unset it`);
    }
  }
  return problems;
}

/**
 * A provider's keys sign tokens for every application it serves (a multi-tenant identity
 * provider signs for other companies' apps too): without `iss` and `aud` checks, any of those
 * tokens would be accepted here, its `sub` taken for one of our users.
 */
function unscopedProviderProblem(env: Env): string | undefined {
  const provider = env.JWT_JWKS_URL !== undefined ? 'JWT_JWKS_URL' : env.JWT_PUBLIC_KEY !== undefined ? 'JWT_PUBLIC_KEY' : undefined;
  if (!provider) return undefined;
  const missing = (['JWT_ISSUER', 'JWT_AUDIENCE'] as const).filter((name) => env[name] === undefined);
  if (missing.length === 0) return undefined;
  return `${missing.join(', ')}: ${env.NODE_ENV === 'production' ? 'required' : 'should be set'} with ${provider}` +
    `${env.NODE_ENV === 'production' ? ' when NODE_ENV=production' : ''}: without both, every token the identity provider signs ` +
    'for any application (a multi-tenant provider signs for other companies\' too) is accepted as an access token here';
}

/**
 * What a validation message may echo of a variable: never a secret (nor a key: a private key
 * pasted into JWT_PUBLIC_KEY is one), and a URL only with its password and secret-looking
 * query parameters masked. Connection strings carry passwords, and this message goes to stderr
 * and from there into whatever collects the logs.
 */
function shownValue(name: string, value: unknown): unknown {
  // CLOUDFLARE_ACCOUNTS carries API tokens.
  if (/SECRET|TOKEN|PASSWORD|KEY$|ACCOUNTS$/.test(name)) return '<redacted>';
  if (name.endsWith('_URL') && typeof value === 'string') return redactUrl(value);
  return value;
}

const DOMAIN_PATTERN = '^(?=.{1,190}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';

/** One entry of CLOUDFLARE_ACCOUNTS. */
const AccountEntrySchema = Type.Object({
  name: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,39}$' })),
  apiToken: Type.String({ minLength: 1 }),
  accountId: Type.String({ minLength: 1, maxLength: 32 }),
  zoneId: Type.String({ minLength: 1, maxLength: 32 }),
  tunnelDomain: Type.String({ pattern: DOMAIN_PATTERN }),
  maxTunnels: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
  baseUrl: Type.Optional(Type.String({ pattern: '^https?://' })),
}, { additionalProperties: false });

function readConfigFile(file: string): string {
  return readFileSync(file, 'utf8');
}

/**
 * CLOUDFLARE_ACCOUNTS (or the file CLOUDFLARE_ACCOUNTS_FILE names), validated; undefined when
 * neither is set. Problems name the entry and the field, never a token (the JSON's text is
 * not echoed: a parse error's message quotes it).
 */
function listedAccounts(env: Env, readFile: (file: string) => string, problems: string[]): CloudflareAccount[] | undefined {
  if (env.CLOUDFLARE_ACCOUNTS !== undefined && env.CLOUDFLARE_ACCOUNTS_FILE !== undefined) {
    problems.push('CLOUDFLARE_ACCOUNTS, CLOUDFLARE_ACCOUNTS_FILE: set one of them, not both');
    return undefined;
  }
  const variable = env.CLOUDFLARE_ACCOUNTS_FILE !== undefined ? 'CLOUDFLARE_ACCOUNTS_FILE' : 'CLOUDFLARE_ACCOUNTS';
  let text = env.CLOUDFLARE_ACCOUNTS;
  if (env.CLOUDFLARE_ACCOUNTS_FILE !== undefined) {
    try {
      text = readFile(env.CLOUDFLARE_ACCOUNTS_FILE);
    } catch (error) {
      problems.push(`CLOUDFLARE_ACCOUNTS_FILE: cannot read ${env.CLOUDFLARE_ACCOUNTS_FILE} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
      return undefined;
    }
  }
  if (text === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    problems.push(`${variable}: not valid JSON (expected an array of accounts)`);
    return undefined;
  }
  if (!Array.isArray(parsed) || parsed.length === 0) {
    problems.push(`${variable}: must be a non-empty JSON array of accounts`);
    return undefined;
  }
  const accounts: CloudflareAccount[] = [];
  parsed.forEach((given: unknown, i) => {
    const errors = validateAgainst(AccountEntrySchema, given as Record<string, unknown>);
    if (errors.length > 0) {
      for (const error of errors) problems.push(`${variable}[${i}]${error.instancePath.replace(/\//g, '.')}: ${error.message}`);
      return;
    }
    const entry = given as Static<typeof AccountEntrySchema>;
    accounts.push({
      name: entry.name ?? entry.accountId,
      apiToken: entry.apiToken,
      accountId: entry.accountId,
      zoneId: entry.zoneId,
      tunnelDomain: entry.tunnelDomain,
      maxTunnels: entry.maxTunnels ?? env.CLOUDFLARE_MAX_TUNNELS,
      baseUrl: entry.baseUrl ?? env.CLOUDFLARE_BASE_URL,
    });
  });
  // A row names its account by id, a metric by name, a hostname its domain: each must be one account's.
  for (const field of ['accountId', 'name', 'zoneId', 'tunnelDomain'] as const) {
    const seen = new Set<string>();
    for (const account of accounts) {
      if (seen.has(account[field])) problems.push(`${variable}: two accounts have ${field} ${JSON.stringify(account[field])}`);
      seen.add(account[field]);
    }
  }
  return accounts.length === parsed.length ? accounts : undefined;
}
