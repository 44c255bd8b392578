/**
 * The heartbeat floor (issue 14): the least a heartbeat endpoint can do. Fastify with
 * `logger: false`, @fastify/jwt's own `request.jwtVerify()` without a verify cache, and one
 * Redis `SET hb:<id> <user> EX <ttl>` per request on a plain ioredis client. Not the broker's
 * auth plugin: the floor is what the broker is measured against, so it must not inherit the
 * broker's costs (or its caches).
 *
 * It verifies the token an agent sends, a heartbeat token (src/auth/heartbeat-token.ts: HS256
 * under the HKDF-derived key, `tid` the tunnel), and refuses one for another tunnel, as any
 * heartbeat endpoint must; with `tokens: 'access'` (bench --tokens=access) it verifies the
 * owners' access tokens under JWT_SECRET itself instead.
 *
 * Run as a process: env PORT, HOST, REDIS_URL, REDIS_KEY_PREFIX, JWT_SECRET, TTL_SECONDS,
 * FLOOR_TOKENS (heartbeat | access); prints "floor ready" once listening; SIGTERM closes it.
 */
import { pathToFileURL } from 'node:url';
import fastifyJwt from '@fastify/jwt';
import Fastify, { type FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { deriveHeartbeatTokenKey } from '../src/auth/heartbeat-token.js';

export const FLOOR_ROUTE = '/v1/tunnels/:tunnelId/heartbeat';

export interface FloorOptions {
  redis: Redis;
  jwtSecret: string;
  ttlSeconds: number;
  /** What the load authenticates with (default: heartbeat tokens, as an agent does). */
  tokens?: 'heartbeat' | 'access';
}

/** The floor app, not listening. */
export async function buildFloor(options: FloorOptions): Promise<FastifyInstance> {
  const { redis, ttlSeconds } = options;
  const heartbeat = (options.tokens ?? 'heartbeat') === 'heartbeat';
  const app = Fastify({ logger: false });
  await app.register(fastifyJwt, {
    secret: heartbeat ? deriveHeartbeatTokenKey(options.jwtSecret) : options.jwtSecret,
    verify: { algorithms: ['HS256'], cache: false },
  });
  app.post<{ Params: { tunnelId: string } }>(FLOOR_ROUTE, async (request, reply) => {
    let claims: { sub?: unknown; tid?: unknown };
    try {
      claims = await request.jwtVerify();
    } catch {
      return reply.code(401).send({ error: 'unauthorized' });
    }
    if (typeof claims.sub !== 'string' || (heartbeat && claims.tid !== request.params.tunnelId)) return reply.code(403).send({ error: 'forbidden' });
    await redis.set(`hb:${request.params.tunnelId}`, claims.sub, 'EX', ttlSeconds);
    // The same body as the broker's heartbeat answer.
    return { ok: true, expiresAt: new Date(Date.now() + ttlSeconds * 1000).toISOString() };
  });
  return app;
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
}

async function main(): Promise<void> {
  const redis = new Redis(required('REDIS_URL'), { keyPrefix: required('REDIS_KEY_PREFIX'), lazyConnect: true, maxRetriesPerRequest: 1 });
  redis.on('error', () => {});
  await redis.connect();
  const tokens = process.env.FLOOR_TOKENS === 'access' ? 'access' : 'heartbeat';
  const app = await buildFloor({ redis, jwtSecret: required('JWT_SECRET'), ttlSeconds: Number(process.env.TTL_SECONDS ?? '60'), tokens });

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    app.close()
      .then(() => redis.quit())
      .then(() => process.exit(0), () => process.exit(1));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);

  await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(required('PORT')) });
  process.stdout.write('floor ready\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((error: unknown) => {
    process.stderr.write(`floor failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
    process.exit(1);
  });
}
