import { PrismaPg } from '@prisma/adapter-pg';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { PrismaClient } from '../generated/prisma/client.js';
import { redactUrl } from '../logging/redact-url.js';

declare module 'fastify' {
  interface FastifyInstance {
    prisma: PrismaClient;
  }
}

export interface PrismaPluginOptions {
  databaseUrl: string;
}

export function createPrismaClient(databaseUrl: string): PrismaClient {
  return new PrismaClient({ adapter: new PrismaPg({ connectionString: databaseUrl }) });
}

/** One Prisma client per app. Connects (and runs a query) at registration so a bad DATABASE_URL fails boot. */
export const prismaPlugin = fp(
  async (app: FastifyInstance, options: PrismaPluginOptions) => {
    const prisma = createPrismaClient(options.databaseUrl);
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
