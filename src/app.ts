import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Logger } from 'pino';
import type { HeartbeatTokensOptions } from './auth/heartbeat-token.js';
import type { JwksTuning } from './auth/token-verifier.js';
import type { Config } from './config/env.js';
import { errorHandlerPlugin, handleError } from './errors/error-handler.js';
import { lazyChildLoggerFactory } from './logging/lazy-child-logger.js';
import { createLogger } from './logging/logger.js';
import { BrokerMetrics } from './metrics/metrics.js';
import { authPlugin } from './plugins/auth.js';
import { cloudflarePlugin } from './plugins/cloudflare.js';
import { metricsPlugin } from './plugins/metrics.js';
import { openapiPlugin } from './plugins/openapi.js';
import { prismaPlugin } from './plugins/prisma.js';
import { rateLimitPlugin } from './plugins/rate-limit.js';
import { readinessPlugin } from './plugins/readiness.js';
import { redisPlugin } from './plugins/redis.js';
import { Reaper } from './reaper/reaper.js';
import { assertAccountsCoverLiveTunnels } from './cloudflare/account-coverage.js';
import { AccountReconcilers } from './reconcile/account-reconcilers.js';
import { HeartbeatStore } from './tunnels/heartbeat-store.js';
import { IdempotencyStore } from './tunnels/idempotency.js';
import { tunnelRoutes } from './tunnels/routes.js';
import { TunnelRefResolver } from './tunnels/tunnel-ref-resolver.js';
import { TunnelService } from './tunnels/tunnel-service.js';

declare module 'fastify' {
  interface FastifyInstance {
    config: Config;
    tunnels: TunnelService;
    heartbeats: HeartbeatStore;
    /** Present when this process runs the reaper (BROKER_ROLE all or reaper). */
    reaper: Reaper | null;
    /** Present when this process runs the reaper: removes upstream orphans, in every account. */
    reconciler: AccountReconcilers | null;
  }
}

export interface BuildAppOptions {
  /** A pino logger to use instead of one made from the config (tests capture logs this way). */
  logger?: Logger;
  /** Injectable random slug source (tests exhaust the slug space with it). */
  randomSlug?: () => string;
  /** Start the reaper's timer when the app is ready (default: when the role includes it). */
  startReaper?: boolean;
  /** Start the reconciler's timer when the app is ready (default: as startReaper). */
  startReconciler?: boolean;
  /** Rebuild Redis's heartbeat state from PostgreSQL when the app is ready (default true; the OpenAPI script, which only reads the routes, needs no tables). */
  restoreHeartbeats?: boolean;
  /** JWKS fetch tuning for JWT_JWKS_URL (tests shorten the intervals and drive the clock). */
  jwks?: JwksTuning;
  /** Heartbeat-token lifetime and renewal window (default 30 days, renewed in the last 10). */
  heartbeatTokens?: HeartbeatTokensOptions;
}

/** Largest request body accepted: a create is a few dozen bytes. */
export const BODY_LIMIT_BYTES = 16 * 1024;

/**
 * Builds the broker without listening. Resources connect during registration, so
 * `await app.ready()` fails fast on a bad DATABASE_URL or REDIS_URL.
 */
export async function buildApp(config: Config, options: BuildAppOptions = {}): Promise<FastifyInstance> {
  const logger = options.logger ?? createLogger(config);
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // Per-request loggers made on first use: see lazy-child-logger.ts.
    childLoggerFactory: lazyChildLoggerFactory,
    bodyLimit: BODY_LIMIT_BYTES,
    // Heartbeats and creates are small and quick; a slow client must not hold a socket forever.
    requestTimeout: 30_000,
    connectionTimeout: 60_000,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    ajv: {
      customOptions: {
        // A port of "3000" is INVALID_INPUT, not 3000: never coerce types.
        coerceTypes: false,
        removeAdditional: true,
        allErrors: false,
      },
    },
    routerOptions: { maxParamLength: 200 },
    // The router's own errors (bad percent-encoding, over-long parameter) answer in the envelope too.
    frameworkErrors: handleError,
  });

  // An empty body with a JSON content type is treated as no body (a heartbeat sent by a
  // client that always sets the header); routes that need a body still reject it.
  const defaultJsonParser = app.getDefaultJsonParser('error', 'error');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    defaultJsonParser(request, text, done);
  });

  // Responses to requests that were already in flight when shutdown began must close
  // their connection, or a keep-alive client holds the server open past the grace period.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onSend', async (_request, reply) => {
    if (closing) reply.header('connection', 'close');
  });

  app.decorate('config', config);
  for (const warning of config.warnings) app.log.warn(`configuration: ${warning}`);
  await app.register(errorHandlerPlugin);
  // Before every route: the OpenAPI document is built from the routes it sees being added.
  await app.register(openapiPlugin);
  // This app's own registry: several apps in one process must not share counters.
  const metrics = new BrokerMetrics({ cloudflareBudgetRequests: config.cloudflare.budget.requests, cloudflareAccounts: config.cloudflare.accounts });
  await app.register(prismaPlugin, { databaseUrl: config.databaseUrl, pool: config.databasePool });
  await app.register(redisPlugin, config.redis);
  await app.register(cloudflarePlugin, { config: config.cloudflare, observer: metrics, access: { config: config.access } });
  await app.register(authPlugin, {
    jwt: config.jwt,
    ...(options.jwks ? { jwks: options.jwks } : {}),
    ...(options.heartbeatTokens ? { heartbeatTokens: options.heartbeatTokens } : {}),
  });
  await app.register(rateLimitPlugin, { onExceeded: (kind) => metrics.rateLimited(`${kind}_rate`) });
  await app.register(metricsPlugin, { metrics, token: config.metrics.token });
  await app.register(readinessPlugin);
  await app.register(
    fp(async (instance: FastifyInstance) => {
      const heartbeats = new HeartbeatStore(instance.redis, {
        ttlSeconds: config.tunnels.ttlSeconds,
        maxPerMinute: config.tunnels.heartbeatMaxPerMinute,
        rebuildLockMs: config.tunnels.leaseSeconds * 1000,
      });
      const service = new TunnelService({
        prisma: instance.prisma,
        heartbeats,
        accounts: instance.cloudflareAccounts,
        config,
        logger: instance.log.child({ component: 'tunnels' }),
        randomSlug: options.randomSlug,
      });
      instance.decorate('heartbeats', heartbeats);
      instance.decorate('tunnels', service);
      // Live tunnels in an account no longer configured could never be ended: refuse to start.
      if (options.restoreHeartbeats ?? true) instance.addHook('onReady', async () => assertAccountsCoverLiveTunnels(instance.prisma, instance.cloudflareAccounts));
      // A Redis that is new or came back empty is rebuilt from PostgreSQL before serving.
      if (options.restoreHeartbeats ?? true) {
        instance.addHook('onReady', async () => {
          await service.restoreHeartbeatState();
        });
      }
      const runsReaper = config.role !== 'api';
      const reaper = runsReaper
        ? new Reaper({ service, heartbeats, logger: instance.log.child({ component: 'reaper' }), intervalMs: config.reaper.intervalSeconds * 1000, observer: metrics })
        : null;
      instance.decorate('reaper', reaper);
      if (reaper && (options.startReaper ?? true)) instance.addHook('onReady', async () => reaper.start());
      const reconciler = runsReaper
        ? new AccountReconcilers({
          prisma: instance.prisma,
          redis: instance.redis,
          accounts: instance.cloudflareAccounts,
          logger: instance.log.child({ component: 'reconciler' }),
          tunnelNamePrefix: config.cloudflare.tunnelNamePrefix,
          intervalMs: config.reconcile.intervalSeconds * 1000,
          graceMs: config.reconcile.graceSeconds * 1000,
        })
        : null;
      instance.decorate('reconciler', reconciler);
      if (reconciler && (options.startReconciler ?? options.startReaper ?? true)) instance.addHook('onReady', async () => reconciler.start());
      // Runs before the plugins' own onClose hooks (which close Redis and PostgreSQL), so the
      // sweep and reconcile pass in progress finish with their connections still open.
      instance.addHook('preClose', async () => {
        await Promise.all([reaper?.stop(), reconciler?.stop()]);
      });
    }, { name: 'tunnels', dependencies: ['prisma', 'redis', 'cloudflare'] }),
  );

  app.get('/healthz', { schema: { hide: false, operationId: 'getLiveness', summary: 'Liveness', response: { 200: { type: 'object', properties: { status: { type: 'string' } } } } } }, async () => ({ status: 'ok' }));

  if (config.role !== 'reaper') {
    await app.register(tunnelRoutes, {
      prefix: '/v1/tunnels',
      service: app.tunnels,
      // A claim is a lease like the create's own: short, and renewed while the create runs.
      idempotency: new IdempotencyStore(app.redis, {
        secret: config.jwt.secret,
        ttlSeconds: config.idempotency.ttlSeconds,
        pendingTtlMs: app.tunnels.leaseMs,
      }),
      heartbeatIntervalSeconds: config.tunnels.heartbeatIntervalSeconds,
      rateLimits: {
        createPerMinute: config.tunnels.createRateLimitPerMinute,
        readPerMinute: config.tunnels.readRateLimitPerMinute,
        deletePerMinute: config.tunnels.deleteRateLimitPerMinute,
      },
      heartbeatTokens: app.heartbeatTokens,
      tunnelRefs: new TunnelRefResolver(app.prisma, config.cloudflare.accounts.map((a) => a.tunnelDomain)),
    });
  }
  return app;
}
