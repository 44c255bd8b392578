import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import Type from 'typebox';
import { AppError, ERROR_CATALOGUE } from '../errors/catalogue.js';
import { errorResponses } from '../http/common-schemas.js';
import { TimeoutError, withTimeout } from '../util/with-timeout.js';

/**
 * Below the usual probe timeouts (Kubernetes' default is 1 s), so a hung dependency makes
 * the probe answer 503 rather than time out itself.
 */
export const DEFAULT_READINESS_TIMEOUT_MS = 800;

export type CheckResult = 'ok' | 'unavailable' | 'timeout';

export interface ReadinessPluginOptions {
  /** Bound on each dependency check. */
  timeoutMs?: number;
}

const CheckResultSchema = Type.Union([Type.Literal('ok'), Type.Literal('unavailable'), Type.Literal('timeout')]);
const Checks = Type.Object({ postgres: CheckResultSchema, redis: CheckResultSchema });

export const readinessRouteSchema = {
  operationId: 'getReadiness',
  summary: 'Readiness',
  description:
    'Whether this process can serve: 200 when PostgreSQL answers `SELECT 1` and Redis answers `PING`, each within ' +
    `${DEFAULT_READINESS_TIMEOUT_MS} ms; otherwise 503 naming the dependency that did not. Liveness is GET /healthz.`,
  response: {
    200: Type.Object({ status: Type.Literal('ready'), checks: Checks }, { description: 'Ready' }),
    ...errorResponses([]),
    503: Type.Object(
      {
        code: Type.Unsafe<'SERVICE_UNAVAILABLE'>({ type: 'string', enum: ['SERVICE_UNAVAILABLE'] }),
        message: Type.String(),
        details: Type.Object({ checks: Checks }),
      },
      { description: `SERVICE_UNAVAILABLE: ${ERROR_CATALOGUE.SERVICE_UNAVAILABLE.message} details.checks says which dependency failed.` },
    ),
  },
};

/**
 * GET /readyz: for a load balancer or orchestrator deciding whether to send traffic here.
 * Unauthenticated and cheap (a round trip to each dependency), and served by every role.
 */
export const readinessPlugin = fp(
  async (app: FastifyInstance, options: ReadinessPluginOptions) => {
    const timeoutMs = options.timeoutMs ?? DEFAULT_READINESS_TIMEOUT_MS;
    const check = async (probe: () => Promise<unknown>): Promise<CheckResult> => {
      try {
        await withTimeout(probe(), timeoutMs);
        return 'ok';
      } catch (error) {
        return error instanceof TimeoutError ? 'timeout' : 'unavailable';
      }
    };

    // Probes arrive every few seconds: only failures are logged (by the error handler).
    app.get('/readyz', { schema: readinessRouteSchema, logLevel: 'warn' }, async () => {
      const [postgres, redis] = await Promise.all([
        check(() => app.prisma.$queryRaw`SELECT 1`),
        // A client that is reconnecting would queue the PING: say so now instead.
        check(async () => {
          if (app.redis.status !== 'ready') throw new Error(`redis client is ${app.redis.status}`);
          return app.redis.ping();
        }),
      ]);
      const checks = { postgres, redis };
      if (postgres === 'ok' && redis === 'ok') return { status: 'ready' as const, checks };
      const failed = Object.entries(checks).filter(([, result]) => result !== 'ok').map(([name, result]) => `${name} ${result}`);
      throw new AppError('SERVICE_UNAVAILABLE', { message: `Not ready: ${failed.join(', ')}.`, details: { checks }, retryAfterSec: 2 });
    });
  },
  { name: 'readiness', fastify: '5.x', dependencies: ['prisma', 'redis'] },
);
