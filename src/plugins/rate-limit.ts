import fastifyRateLimit, { type RateLimitOptions } from '@fastify/rate-limit';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { AppError } from '../errors/catalogue.js';

/** What a per-user limit counts: CREATE_, READ_ and DELETE_RATE_LIMIT_PER_MINUTE (`update`, a PATCH, counts at the DELETE rate). */
export type RateLimitKind = 'create' | 'read' | 'delete' | 'update';

/** A route's `config.rateLimit`: so many requests per user per minute, named for metrics. */
export interface PerUserRateLimit extends RateLimitOptions {
  kind: RateLimitKind;
  max: number;
  timeWindow: number;
}

/**
 * Each route that uses this counts on its own, per user: @fastify/rate-limit's Redis store keys
 * a route's counter by method, route and key (`rl:GET/v1/tunnels/:tunnelId-user:<id>`). So a
 * user (or a script of theirs) polling one tunnel cannot spend the budget of listing, and no
 * amount of reading can starve their own DELETEs or creates: ending a tunnel is what frees
 * quota, and must stay possible when a client misbehaves. `max` is per route: each read route
 * allows READ_RATE_LIMIT_PER_MINUTE.
 */
export function perUserRateLimit(kind: RateLimitKind, perMinute: number): PerUserRateLimit {
  return { kind, max: perMinute, timeWindow: 60_000 };
}

/**
 * Per-route, per-user rate limits, counted in Redis so every broker process shares one budget.
 * Nothing is limited globally; routes opt in with `config.rateLimit: perUserRateLimit(…)`, and
 * every /v1 route but the heartbeat must (test/tunnels/rate-limit.test.ts walks the routes).
 */
export interface RateLimitPluginOptions {
  /** Called for every request a limit refuses (metrics). */
  onExceeded?: (kind: RateLimitKind) => void;
}

export const rateLimitPlugin = fp(
  async (app: FastifyInstance, options: RateLimitPluginOptions) => {
    const { onExceeded } = options;
    await app.register(fastifyRateLimit, {
      global: false,
      redis: app.redis,
      nameSpace: 'rl:',
      // Auth runs in onRequest; counting in preValidation keys on the verified user
      // and still counts attempts whose bodies turn out to be invalid.
      hook: 'preValidation',
      keyGenerator: (request) => `user:${request.userId}`,
      ...(onExceeded
        ? {
          onExceeded: (request) => {
            const limit = request.routeOptions.config.rateLimit as PerUserRateLimit | undefined;
            if (limit?.kind) onExceeded(limit.kind);
          },
        }
        : {}),
      errorResponseBuilder: (_request, context) =>
        new AppError('RATE_LIMITED', {
          message: `Rate limit exceeded: at most ${context.max} requests per minute; retry in ${context.after}.`,
          retryAfterSec: Math.max(1, Math.ceil(context.ttl / 1000)),
        }),
    });
  },
  { name: 'rate-limit', fastify: '5.x', dependencies: ['redis', 'auth'] },
);
