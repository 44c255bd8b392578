import type { FastifyBaseLogger } from 'fastify';
import pino, { type DestinationStream, type Logger as PinoLogger, type LoggerOptions } from 'pino';
import type { Config } from '../config/env.js';

/** The logger type every module takes: pino's, as Fastify exposes it on requests. */
export type Logger = FastifyBaseLogger;

/**
 * Secrets never reach a log line: bearer tokens, cloudflared tokens and heartbeat
 * tokens are censored wherever they appear in a logged object, at any depth we log.
 */
const SECRET_KEYS = ['authorization', 'cookie', 'token', 'cloudflaredToken', 'heartbeatToken', 'apiToken', 'secret', 'tunnel_secret', 'credentials_file', 'password'];
export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  ...SECRET_KEYS.flatMap((key) => [key, `*.${key}`, `*.*.${key}`]),
];

export const REDACTED = '[redacted]';

export function loggerOptions(config: Pick<Config, 'log'>): LoggerOptions {
  return {
    level: config.log.level,
    redact: { paths: REDACT_PATHS, censor: REDACTED },
    base: { service: 'tunnel-broker' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
}

/**
 * JSON to stdout, or pino-pretty when stdout is a terminal or LOG_PRETTY says so.
 * Tests pass their own destination to read what was logged.
 */
export function createLogger(config: Pick<Config, 'log'>, destination?: DestinationStream): PinoLogger {
  const options = loggerOptions(config);
  if (destination) return pino(options, destination);
  const pretty = config.log.pretty ?? process.stdout.isTTY === true;
  if (pretty) {
    return pino({ ...options, transport: { target: 'pino-pretty', options: { colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return pino(options);
}

/** Stable names for lifecycle events, so operators can alert on them. */
export const LogEvent = {
  tunnelCreated: 'tunnel.created',
  tunnelAccessChanged: 'tunnel.access_changed',
  tunnelCreateFailed: 'tunnel.create_failed',
  tunnelDeleted: 'tunnel.deleted',
  tunnelHeartbeatLapsed: 'tunnel.heartbeat_lapsed',
  tunnelReaped: 'tunnel.reaped',
  tunnelEndFailed: 'tunnel.end_failed',
  upstreamFailure: 'upstream.failure',
  upstreamRetry: 'upstream.retry',
  upstreamAdopted: 'upstream.adopted',
  tunnelRecovered: 'tunnel.recovered',
  heartbeatStateRebuilt: 'heartbeat_state.rebuilt',
  heartbeatStateRebuildFailed: 'heartbeat_state.rebuild_failed',
  idempotencyReplayed: 'idempotency.replayed',
  idempotencyUnreadable: 'idempotency.unreadable',
  idempotencyClaimLost: 'idempotency.claim_lost',
  idempotencyStoreFailed: 'idempotency.store_failed',
  identityJwksFetchFailed: 'identity.jwks_fetch_failed',
  reaperSweep: 'reaper.sweep',
  reaperSweepFailed: 'reaper.sweep_failed',
  reconcilePass: 'reconcile.pass',
  reconcileFailed: 'reconcile.failed',
  reconcileDeleted: 'reconcile.deleted',
  reconcileDeleteFailed: 'reconcile.delete_failed',
} as const;
