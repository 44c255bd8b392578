import { userInfo } from 'node:os';
import type { FastifyInstance } from 'fastify';
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';
import { type BootConfig, type Config, ConfigError, loadBootConfig } from '../config/env.js';
import { type ServiceNeeds, startServices } from '../dev-services/dev-services.js';
import { loggerOptions } from '../logging/logger.js';

/** Exit codes every command keeps to, so scripts can tell a typo from a missing tunnel. */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
} as const;

/** Where a command reads its settings and writes its output; tests and the bin pass the real process's. */
export interface CliContext {
  env: Record<string, string | undefined>;
  /** Results: tables, JSON, tokens. */
  stdout(text: string): void;
  /** Errors, warnings and logs. */
  stderr(text: string): void;
  stderrIsTTY: boolean;
}

/** A failure the command has already explained: `message` goes to stderr, `exitCode` to the shell. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = ExitCode.failure,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Options every command inherits from the program. */
export interface GlobalOptions {
  logLevel: LogLevel;
}

export function loadCliConfig(context: CliContext): BootConfig {
  try {
    return loadBootConfig(context.env);
  } catch (error) {
    if (error instanceof ConfigError) throw new CliError(`${error.message}\nSee docs/configuration.md for every variable, or run \`tunnel-broker doctor\`.`);
    throw error;
  }
}

/**
 * Runs `fn` with the stores resolved as `npm start` resolves them: DATABASE_URL and REDIS_URL,
 * or the embedded PostgreSQL and private Redis in DEV_DATA_DIR (used if a broker is running
 * them, else started for the command and stopped after it).
 */
export async function withServices<T>(boot: BootConfig, fn: (config: Config) => Promise<T>, needs: ServiceNeeds = { redis: true }): Promise<T> {
  let services;
  try {
    services = await startServices(boot, needs);
  } catch (error) {
    throw new CliError(`cannot start PostgreSQL or Redis: ${describeError(error)}`);
  }
  try {
    return await fn(services.config);
  } finally {
    await services.stop();
  }
}

/**
 * The broker's logs go to stderr, so stdout carries only the command's result (a table,
 * JSON, a token). Quiet by default (errors only): an operator asked for a result, and a
 * failure is explained by the command's own `error:` line; --log-level warn shows the detail.
 */
export function cliLogger(config: Pick<Config, 'log'>, level: LogLevel, context: CliContext): Logger {
  const options = { ...loggerOptions(config), level };
  if (context.stderrIsTTY && config.log.pretty !== false) {
    return pino(options, pretty({ destination: 2, sync: true, colorize: true, translateTime: 'SYS:HH:MM:ss.l' }));
  }
  return pino(options, pino.destination({ fd: 2, sync: true }));
}

export interface BrokerOptions {
  logLevel: LogLevel;
  /** Refuse to start without real Cloudflare settings (the command talks to Cloudflare). */
  needsCloudflare: boolean;
}

/**
 * Runs `fn` with the same broker the server runs (TunnelService, Reconciler, TunnelProvider,
 * the shared Cloudflare request budget), built by buildApp but never listening and with no
 * timers started, then closes it. The role is forced to `all` so the reconciler exists
 * whatever BROKER_ROLE the environment was written for.
 */
export async function withBroker<T>(context: CliContext, options: BrokerOptions, fn: (app: FastifyInstance, config: Config) => Promise<T>): Promise<T> {
  const boot = loadCliConfig(context);
  if (options.needsCloudflare && boot.cloudflare.mode === 'emulator') {
    throw new CliError(
      'Cloudflare is not configured. Without CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_ZONE_ID and TUNNEL_DOMAIN (or CLOUDFLARE_ACCOUNTS), ' +
        '`npm start` uses an emulator inside its own process, which this command cannot reach. Set them (for a standalone ' +
        'emulator, `npm run emulator`, also CLOUDFLARE_BASE_URL).',
    );
  }
  const logger = cliLogger(boot, options.logLevel, context);
  // Loaded here, not at the top: `token create` and `doctor` should not pay for the whole broker.
  const { buildApp } = await import('../app.js');
  return withServices(boot, async (config) => {
    let app: FastifyInstance;
    try {
      app = await buildApp({ ...config, role: 'all' }, { logger, startReaper: false, startReconciler: false });
      await app.ready();
    } catch (error) {
      throw new CliError(`cannot start: ${describeError(error)}\nRun \`tunnel-broker doctor\` to check the configuration.`);
    }
    try {
      return await fn(app, config);
    } finally {
      await app.close();
    }
  });
}

/** Who `operator:<name>` is: --as, else the login name. */
export function operatorName(given: string | undefined): string {
  let name = given?.trim();
  if (!name) {
    try {
      name = userInfo().username;
    } catch {
      name = undefined;
    }
  }
  if (!name) return 'unknown';
  if (name.length > 100 || /\p{Cc}/u.test(name)) throw new CliError('--as must be at most 100 characters, without control characters', ExitCode.usage);
  return name;
}

/** An error's message, with the parts of the empty-message AggregateErrors that connection failures produce. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  if (error instanceof AggregateError && error.message === '') {
    return error.errors.map((e: unknown) => (e instanceof Error ? e.message : String(e))).join('; ');
  }
  const cause = error.cause;
  if (error.message === '' && cause !== undefined) return describeError(cause);
  return error.message;
}
