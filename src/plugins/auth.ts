import fastifyJwt from '@fastify/jwt';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { type HeartbeatGrant, HeartbeatTokens, type HeartbeatTokensOptions } from '../auth/heartbeat-token.js';
import { IdentityProviderUnavailableError, InvalidTokenError } from '../auth/token-errors.js';
import { ACCESS_TOKEN_VERIFY, type JwksTuning, type Principal, TokenVerifier } from '../auth/token-verifier.js';
import type { Config } from '../config/env.js';
import { AppError } from '../errors/catalogue.js';

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * onRequest hook: verifies the bearer token and sets request.userId, or answers 401
     * (403 for a heartbeat token outside its one route and tunnel, 503 when the identity
     * provider's keys cannot be fetched).
     */
    authenticate: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
    /** Signs the heartbeat tokens that POST /v1/tunnels hands out. */
    heartbeatTokens: HeartbeatTokens;
    tokenVerifier: TokenVerifier;
  }
  interface FastifyRequest {
    userId: string;
    /** The access token's `email` claim, when it carries one. */
    userEmail: string | undefined;
    /** Set when the request was made with a heartbeat token (already checked against the route). */
    heartbeatGrant: HeartbeatGrant | null;
  }
  interface FastifyContextConfig {
    /**
     * The route accepts a heartbeat token for the tunnel named by this path parameter. Every
     * other route refuses heartbeat tokens with 403.
     */
    heartbeatTokenParam?: string;
  }
}

export interface AuthPluginOptions {
  jwt: Config['jwt'];
  /** JWKS fetch tuning (tests shorten the intervals). */
  jwks?: JwksTuning;
  /** Heartbeat-token lifetime and renewal window (tests shorten them to see renewals). */
  heartbeatTokens?: HeartbeatTokensOptions;
}

const BEARER = /^Bearer +(\S+) *$/i;
/** Seconds a client should wait when the identity provider's keys are out of reach. */
const PROVIDER_RETRY_AFTER_SEC = 5;

/**
 * Every later log line of the request carries userId. Fastify gives each request a pino child
 * of its own, so the binding goes onto it: a second child per request (pino re-runs the
 * redaction over its bindings and rebuilds its level methods) was a tenth of a heartbeat's CPU,
 * for lines a successful heartbeat never writes (bench/results.md). A logger without
 * setBindings (Fastify's no-op logger, shared by all requests) gets a child as before.
 */
function bindUserToLog(request: FastifyRequest, userId: string): void {
  const log = request.log as FastifyRequest['log'] & { setBindings?: (bindings: Record<string, unknown>) => void };
  if (typeof log.setBindings === 'function') log.setBindings({ userId });
  else request.log = request.log.child({ userId });
}

function unauthorized(reply: FastifyReply, message?: string): AppError {
  reply.header('www-authenticate', 'Bearer');
  return new AppError('UNAUTHORIZED', message ? { message } : {});
}

/**
 * Bearer authentication for /v1: the broker's own HS256 access tokens (JWT_SECRET), an
 * identity provider's RS256/ES256 tokens (JWT_PUBLIC_KEY or JWT_JWKS_URL), and heartbeat
 * tokens, which only the route that opts in with `heartbeatTokenParam` accepts, and only for
 * the tunnel in that parameter. See TokenVerifier for which token goes where.
 */
export const authPlugin = fp(
  async (app: FastifyInstance, options: AuthPluginOptions) => {
    // The broker's own access tokens go through @fastify/jwt (fast-jwt underneath, constant-time
    // HMAC comparison, verified tokens cached); the verifier routes the other kinds by header.
    await app.register(fastifyJwt, {
      secret: options.jwt.secret,
      sign: { algorithm: 'HS256' },
      verify: { ...ACCESS_TOKEN_VERIFY, algorithms: [...ACCESS_TOKEN_VERIFY.algorithms], requiredClaims: [...ACCESS_TOKEN_VERIFY.requiredClaims] },
    });
    const heartbeatTokens = new HeartbeatTokens(options.jwt.secret, options.heartbeatTokens);
    const verifier = new TokenVerifier({
      jwt: options.jwt,
      heartbeatTokens,
      accessVerify: (token) => app.jwt.verify<Record<string, unknown>>(token),
      logger: app.log.child({ component: 'auth' }),
      ...(options.jwks ? { jwks: options.jwks } : {}),
    });
    app.decorate('heartbeatTokens', heartbeatTokens);
    app.decorate('tokenVerifier', verifier);
    app.decorateRequest('userId', '');
    app.decorateRequest('userEmail', undefined);
    app.decorateRequest('heartbeatGrant', null);
    app.decorate('authenticate', async (request: FastifyRequest, reply: FastifyReply) => {
      const token = BEARER.exec(request.headers.authorization ?? '')?.[1];
      if (token === undefined) throw unauthorized(reply);
      let principal: Principal;
      try {
        principal = await verifier.verify(token);
      } catch (error) {
        if (error instanceof IdentityProviderUnavailableError) {
          throw new AppError('SERVICE_UNAVAILABLE', { message: error.message, retryAfterSec: PROVIDER_RETRY_AFTER_SEC, cause: error });
        }
        throw unauthorized(reply, error instanceof InvalidTokenError && error.public ? error.message : undefined);
      }
      if (principal.kind === 'heartbeat') {
        const param = request.routeOptions.config.heartbeatTokenParam;
        const named = param === undefined ? undefined : (request.params as Record<string, unknown> | undefined)?.[param];
        if (typeof named !== 'string' || named.toLowerCase() !== principal.tunnelId) {
          reply.header('www-authenticate', 'Bearer error="insufficient_scope"');
          throw new AppError('FORBIDDEN', { message: 'A heartbeat token can only heartbeat its own tunnel.' });
        }
        request.heartbeatGrant = { userId: principal.userId, tunnelId: principal.tunnelId, expiresAtMs: principal.expiresAtMs };
      }
      request.userId = principal.userId;
      if (principal.kind === 'user' && principal.email !== undefined) request.userEmail = principal.email;
      bindUserToLog(request, principal.userId);
    });
  },
  { name: 'auth', fastify: '5.x' },
);
