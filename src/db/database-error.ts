import { Prisma } from '../generated/prisma/client.js';

/**
 * PostgreSQL and Prisma errors are translated here, at the database boundary, so
 * callers ask "was this a unique violation?" rather than parse driver codes.
 *
 * Prisma reports a failure in three shapes: a query-API error with its own code (P2002 …),
 * a raw query's P2010 that carries the driver adapter's classification in
 * `meta.driverAdapterError.cause`, and (before Prisma is involved, or from pg itself) the
 * pg error with PostgreSQL's SQLSTATE. Each question below answers for all three.
 */

interface DriverAdapterCause {
  kind?: string;
  originalCode?: string;
  constraint?: { index?: string; fields?: string[] };
}

/** The driver adapter's classification of a raw query's failure (P2010), if that is what this is. */
function rawQueryCause(error: unknown): DriverAdapterCause | undefined {
  if (!(error instanceof Prisma.PrismaClientKnownRequestError) || error.code !== 'P2010') return undefined;
  const meta = error.meta as { driverAdapterError?: { cause?: DriverAdapterCause } } | undefined;
  return meta?.driverAdapterError?.cause;
}

export function isUniqueViolation(error: unknown, constraint?: string): boolean {
  if (error instanceof Prisma.PrismaClientKnownRequestError && error.code === 'P2002') {
    if (!constraint) return true;
    const meta = JSON.stringify(error.meta ?? {});
    return meta.includes(`"${constraint}"`);
  }
  const cause = rawQueryCause(error);
  if (cause) return cause.kind === 'UniqueConstraintViolation' && (!constraint || cause.constraint?.index === constraint);
  const pg = error as { code?: string; constraint?: string } | undefined;
  return pg?.code === '23505' && (!constraint || pg.constraint === constraint);
}

/** Whether PostgreSQL failed the statement with this SQLSTATE (e.g. one a function raises on purpose). */
export function hasSqlState(error: unknown, sqlState: string): boolean {
  const cause = rawQueryCause(error);
  if (cause) return cause.originalCode === sqlState;
  return (error as { code?: string } | undefined)?.code === sqlState;
}

const UNAVAILABLE_PRISMA_CODES = new Set([
  // can't reach, timed out, operation timed out, server closed the connection, pool timeout
  'P1001', 'P1002', 'P1008', 'P1017', 'P2024',
]);
const UNAVAILABLE_ADAPTER_KINDS = new Set(['DatabaseNotReachable', 'ConnectionClosed', 'SocketTimeout', 'TooManyConnections', 'TlsConnectionError']);
const UNAVAILABLE_SQLSTATES = new Set([
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, shutting down)
  '53300', // too_many_connections
]);
const UNAVAILABLE_SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE']);

/** Connection-level failures: PostgreSQL is down, restarting or unreachable. */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (error instanceof Prisma.PrismaClientInitializationError) return true;
  const cause = rawQueryCause(error);
  if (cause) {
    return UNAVAILABLE_ADAPTER_KINDS.has(cause.kind ?? '') || UNAVAILABLE_SQLSTATES.has(cause.originalCode ?? '') || UNAVAILABLE_SOCKET_CODES.has(cause.originalCode ?? '');
  }
  if (error instanceof Prisma.PrismaClientKnownRequestError) return UNAVAILABLE_PRISMA_CODES.has(error.code);
  const code = (error as { code?: string } | undefined)?.code ?? '';
  return UNAVAILABLE_SOCKET_CODES.has(code) || UNAVAILABLE_SQLSTATES.has(code);
}
