import fastifyJwt from '@fastify/jwt';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { isUsableUserId } from '../auth/access-token.js';
import { AppError } from '../errors/catalogue.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** onRequest hook: verifies the bearer token and sets request.userId, or answers 401. */
    authenticate: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
  }
  interface FastifyRequest {
    userId: string;
  }
}

declare module '@fastify/jwt' {
  interface FastifyJWT {
    payload: { sub: string };
    user: { sub: string; exp: number };
  }
}

export interface AuthPluginOptions {
  secret: string;
}

/**
 * Access tokens: HS256 JWTs signed with JWT_SECRET, `sub` = user id, `exp` required.
 * fast-jwt compares signatures in constant time; verified tokens are cached (until
 * their expiry) because verification is most of the heartbeat hot path.
 */
export const authPlugin = fp(
  async (app: FastifyInstance, options: AuthPluginOptions) => {
    await app.register(fastifyJwt, {
      secret: options.secret,
      sign: { algorithm: 'HS256' },
      verify: { algorithms: ['HS256'], requiredClaims: ['sub', 'exp'], cache: 10_000, cacheTTL: 600_000 },
    });
    app.decorateRequest('userId', '');
    app.decorate('authenticate', async (request: FastifyRequest, reply: FastifyReply) => {
      let sub: unknown;
      try {
        sub = (await request.jwtVerify<{ sub: unknown }>()).sub;
      } catch {
        reply.header('www-authenticate', 'Bearer');
        throw new AppError('UNAUTHORIZED');
      }
      if (!isUsableUserId(sub)) {
        reply.header('www-authenticate', 'Bearer');
        throw new AppError('UNAUTHORIZED', { message: 'The token has no usable subject.' });
      }
      request.userId = sub;
      request.log = request.log.child({ userId: sub });
    });
  },
  { name: 'auth', fastify: '5.x' },
);
