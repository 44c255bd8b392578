import fastifyRateLimit from '@fastify/rate-limit';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { AppError } from '../errors/catalogue.js';

/**
 * Per-route rate limits, counted in Redis so every broker process shares one budget.
 * Nothing is limited globally; routes opt in with `config.rateLimit`.
 */
export interface RateLimitPluginOptions {
  /** Called for every request a limit refuses (metrics). */
  onExceeded?: () => void;
}

export const rateLimitPlugin = fp(
  async (app: FastifyInstance, options: RateLimitPluginOptions) => {
    await app.register(fastifyRateLimit, {
      global: false,
      redis: app.redis,
      nameSpace: 'rl:',
      // Auth runs in onRequest; counting in preValidation keys on the verified user
      // and still counts attempts whose bodies turn out to be invalid.
      hook: 'preValidation',
      keyGenerator: (request) => `user:${request.userId}`,
      ...(options.onExceeded ? { onExceeded: options.onExceeded } : {}),
      errorResponseBuilder: (_request, context) =>
        new AppError('RATE_LIMITED', {
          message: `Rate limit exceeded: at most ${context.max} requests per minute; retry in ${context.after}.`,
          retryAfterSec: Math.max(1, Math.ceil(context.ttl / 1000)),
        }),
    });
  },
  { name: 'rate-limit', fastify: '5.x', dependencies: ['redis', 'auth'] },
);
