import { PrismaPg } from '@prisma/adapter-pg';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { type DatabasePoolConfig, DEFAULT_DATABASE_POOL } from '../config/env.js';
import { PrismaClient } from '../generated/prisma/client.js';
import { redactUrl } from '../logging/redact-url.js';

declare module 'fastify' {
  interface FastifyInstance {
    prisma: PrismaClient;
  }
}

export interface PrismaPluginOptions {
  databaseUrl: string;
  pool?: DatabasePoolConfig;
}

/**
 * A Prisma client on a bounded pg pool. Safe behind PgBouncer in transaction mode: the
 * adapter sends unnamed statements, and the request path takes only transaction-scoped
 * advisory locks and sets nothing on the session (the statement timeout is a startup
 * parameter; DATABASE_STATEMENT_TIMEOUT_MS=0 leaves it to the pooler or the role).
 */
export function createPrismaClient(databaseUrl: string, pool: DatabasePoolConfig = DEFAULT_DATABASE_POOL): PrismaClient {
  return new PrismaClient({
    adapter: new PrismaPg({
      connectionString: databaseUrl,
      max: pool.max,
      connectionTimeoutMillis: pool.connectTimeoutMs,
      ...(pool.statementTimeoutMs > 0 ? { statement_timeout: pool.statementTimeoutMs } : {}),
    }),
  });
}

/** One Prisma client per app. Connects (and runs a query) at registration so a bad DATABASE_URL fails boot. */
export const prismaPlugin = fp(
  async (app: FastifyInstance, options: PrismaPluginOptions) => {
    const prisma = createPrismaClient(options.databaseUrl, options.pool);
    try {
      await prisma.$queryRaw`SELECT 1`;
    } catch (error) {
      await prisma.$disconnect().catch(() => {});
      throw new Error(`Cannot reach PostgreSQL at ${redactUrl(options.databaseUrl)}: ${(error as Error).message}`, { cause: error });
    }
    app.decorate('prisma', prisma);
    app.addHook('onClose', async () => {
      await prisma.$disconnect();
    });
  },
  { name: 'prisma', fastify: '5.x' },
);
