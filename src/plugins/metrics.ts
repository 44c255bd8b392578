import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest, onErrorHookHandler, onResponseHookHandler, RouteOptions } from 'fastify';
import fp from 'fastify-plugin';
import { TunnelRows } from '../tunnels/tunnel-rows.js';
import Type from 'typebox';
import { AppError } from '../errors/catalogue.js';
import { toAppError } from '../errors/error-handler.js';
import type { PrismaClient } from '../generated/prisma/client.js';
import { errorResponses } from '../http/common-schemas.js';
import { type Audience, type BrokerMetrics, LIVE_STATUSES, type LiveCounts, type LiveStatus } from '../metrics/metrics.js';
import { REPLAYED_HEADER } from '../tunnels/idempotency.js';

declare module 'fastify' {
  interface FastifyInstance {
    metrics: BrokerMetrics;
  }
  interface FastifyContextConfig {
    /** Which per-route metric this route feeds; see metricsPlugin. */
    metric?: 'tunnel_create' | 'heartbeat';
  }
}

export interface MetricsPluginOptions {
  metrics: BrokerMetrics;
  /** METRICS_TOKEN: when set, GET /metrics needs `Authorization: Bearer <it>`. */
  token: string | undefined;
}

/** One GROUP BY over the rows that are not ended (the (status, updated_at) index covers it). */
export async function countLiveTunnels(prisma: PrismaClient): Promise<LiveCounts> {
  const groups = await prisma.tunnel.groupBy({ by: ['status', 'accessMode'], where: { status: { in: [...LIVE_STATUSES] } }, _count: { _all: true } });
  const audience: Partial<Record<Audience, number>> = {};
  const counts: LiveCounts = { audience };
  for (const group of groups) {
    const status = group.status as LiveStatus;
    counts[status] = (counts[status] ?? 0) + group._count._all;
    audience[group.accessMode] = (audience[group.accessMode] ?? 0) + group._count._all;
  }
  return counts;
}

const sha256 = (value: string) => createHash('sha256').update(value).digest();
const BEARER = /^Bearer +(\S+) *$/i;

export const metricsRouteSchema = {
  operationId: 'getMetrics',
  summary: 'Prometheus metrics',
  description:
    'Prometheus text exposition of this process: tunnels by status, creates, heartbeats, reaps, Cloudflare calls and budget, ' +
    'rate-limit rejections, and process and event-loop metrics. Needs `Authorization: Bearer <METRICS_TOKEN>` when the broker ' +
    'has METRICS_TOKEN set, and is open otherwise.',
  response: {
    200: {
      description: 'Prometheus text format 0.0.4',
      content: { 'text/plain': { schema: Type.String() } },
    },
    ...errorResponses(['UNAUTHORIZED']),
  },
};

/**
 * GET /metrics, the scrape-time sources of the metrics object, and the per-route hooks
 * that count creates and heartbeats. Routes opt in with `config.metric`; the hooks are
 * attached to those routes only, so no other request pays for them.
 */
export const metricsPlugin = fp(
  async (app: FastifyInstance, options: MetricsPluginOptions) => {
    const { metrics } = options;
    app.decorate('metrics', metrics);
    metrics.bindSources({
      liveTunnels: () => countLiveTunnels(app.prisma),
      cloudflareBudgetRemaining: () => app.cloudflareBudget.budget.remaining(),
      accountTunnels: () => new TunnelRows(app.prisma).liveCountsByAccount(app.cloudflareAccounts.primary.account.accountId),
      accountBudgetRemaining: async (accountId) => {
        const handle = app.cloudflareAccounts.byId(accountId);
        if (!handle) throw new Error(`unknown account ${accountId}`);
        return handle.budget.budget.remaining();
      },
    });

    app.addHook('onRoute', (route) => {
      if (route.config?.metric === 'heartbeat') {
        appendHook<onResponseHookHandler>(route, 'onResponse', (_request, reply, done) => {
          metrics.heartbeat(reply.statusCode);
          done();
        });
      } else if (route.config?.metric === 'tunnel_create') {
        instrumentCreate(route, metrics);
      }
    });

    const expected = options.token === undefined ? undefined : sha256(options.token);
    const requireToken = async (request: FastifyRequest, reply: FastifyReply) => {
      if (!expected) return;
      const presented = BEARER.exec(request.headers.authorization ?? '')?.[1] ?? '';
      // Hashing first makes the comparison constant-time whatever the lengths.
      if (!timingSafeEqual(sha256(presented), expected)) {
        reply.header('www-authenticate', 'Bearer realm="metrics"');
        throw new AppError('UNAUTHORIZED', { message: 'A valid metrics token is required.' });
      }
    };

    // Scrapes every few seconds would drown the access log; server errors are still logged.
    app.get('/metrics', { schema: metricsRouteSchema, logLevel: 'warn', onRequest: requireToken }, async (_request, reply) => {
      const body = await metrics.scrape();
      return reply.type(metrics.contentType).send(body);
    });
  },
  { name: 'metrics', fastify: '5.x', dependencies: ['prisma', 'cloudflare'] },
);

/**
 * Errors are counted by their catalogue code in onError, which sees the error itself (the
 * status alone is ambiguous: 409, 429 and 503 each carry several codes); successes and
 * idempotent replays, which are sent as plain bodies, in onResponse.
 */
function instrumentCreate(route: RouteOptions, metrics: BrokerMetrics): void {
  appendHook<onErrorHookHandler>(route, 'onError', (_request, _reply, error, done) => {
    metrics.createOutcome(toAppError(error).code);
    done();
  });
  appendHook<onResponseHookHandler>(route, 'onResponse', (_request, reply, done) => {
    if (reply.getHeader(REPLAYED_HEADER) === 'true') metrics.createOutcome('replayed');
    else if (reply.statusCode < 400) metrics.createOutcome('created');
    done();
  });
}

function appendHook<H>(route: RouteOptions, name: 'onResponse' | 'onError', hook: H): void {
  const existing = route[name] as H | H[] | undefined;
  (route as unknown as Record<string, H[]>)[name] = existing === undefined ? [hook] : [...(Array.isArray(existing) ? existing : [existing]), hook];
}
