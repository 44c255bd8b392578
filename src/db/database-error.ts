import { Prisma } from '../generated/prisma/client.js';

/**
 * PostgreSQL and Prisma errors are translated here, at the database boundary, so
 * callers ask "was this a unique violation?" rather than parse driver codes.
 */
export function isUniqueViolation(error: unknown, constraint?: string): boolean {
  if (error instanceof Prisma.PrismaClientKnownRequestError && error.code === 'P2002') {
    if (!constraint) return true;
    const meta = JSON.stringify(error.meta ?? {});
    return meta.includes(`"${constraint}"`);
  }
  const pg = error as { code?: string; constraint?: string } | undefined;
  return pg?.code === '23505' && (!constraint || pg.constraint === constraint);
}

/** Connection-level failures: PostgreSQL is down, restarting or unreachable. */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (error instanceof Prisma.PrismaClientInitializationError) return true;
  if (error instanceof Prisma.PrismaClientKnownRequestError) {
    // P1001 can't reach, P1002 timed out, P1017 server closed the connection, P2024 pool timeout.
    return ['P1001', 'P1002', 'P1008', 'P1017', 'P2024'].includes(error.code);
  }
  const code = (error as { code?: string } | undefined)?.code;
  return code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === '57P01' || code === '57P03';
}
