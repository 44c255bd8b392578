/**
 * The heartbeat floor: the least a heartbeat endpoint can do. A bare Fastify server with
 * the broker's own authentication (src/plugins/auth.ts, registered with the config the
 * way src/app.ts registers it, so verification, its options and its cache cannot drift)
 * and one Redis `SET ... EX` per request, on a Redis client made the way the broker makes
 * its own (src/plugins/redis.ts). No logger, no schemas, no other hooks.
 *
 * Run as a process: env PORT, HOST, REDIS_URL, REDIS_KEY_PREFIX, JWT_SECRET, TTL_SECONDS;
 * prints "floor ready" once listening; SIGTERM closes it.
 */
import { pathToFileURL } from 'node:url';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Redis } from 'ioredis';
import { loadBootConfig } from '../src/config/env.js';
import { authPlugin } from '../src/plugins/auth.js';
import { createRedisClient } from '../src/plugins/redis.js';

export const FLOOR_ROUTE = '/v1/tunnels/:tunnelId/heartbeat';

export interface FloorOptions {
  redis: Redis;
  jwtSecret: string;
  ttlSeconds: number;
}

/** The floor app, not listening. */
export async function buildFloor(options: FloorOptions): Promise<FastifyInstance> {
  const config = loadBootConfig({ NODE_ENV: 'test', JWT_SECRET: options.jwtSecret });
  const { redis, ttlSeconds } = options;
  const app = Fastify({ logger: false });
  await app.register(authPlugin, { jwt: config.jwt });
  app.post<{ Params: { tunnelId: string } }>(
    FLOOR_ROUTE,
    // Accepts a heartbeat token for the tunnel in the path, as the broker's route does.
    { onRequest: app.authenticate, config: { heartbeatTokenParam: 'tunnelId' } },
    async (request) => {
      await redis.set(`hb:${request.params.tunnelId}`, request.userId, 'EX', ttlSeconds);
      // The same body as the broker's heartbeat answer.
      return { ok: true, expiresAt: new Date(Date.now() + ttlSeconds * 1000).toISOString() };
    },
  );
  return app;
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
}

async function main(): Promise<void> {
  const redis = createRedisClient({ url: required('REDIS_URL'), keyPrefix: required('REDIS_KEY_PREFIX') });
  redis.on('error', () => {});
  await redis.connect();
  const app = await buildFloor({ redis, jwtSecret: required('JWT_SECRET'), ttlSeconds: Number(process.env.TTL_SECONDS ?? '60') });

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
