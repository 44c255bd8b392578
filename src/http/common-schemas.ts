import Type, { type TSchema } from 'typebox';
import { ERROR_CATALOGUE, type ErrorCode } from '../errors/catalogue.js';

/** The body of every error response. */
export const ErrorResponse = Type.Object(
  {
    code: Type.String({ description: 'A stable, machine-readable error code.' }),
    message: Type.String({ description: 'A human-readable explanation.' }),
    details: Type.Optional(Type.Object({}, { additionalProperties: true })),
  },
  { $id: 'ErrorResponse', description: 'Error' },
);

/**
 * Response schemas for the error statuses a route can answer with, each documenting
 * which codes it carries. Every route also gets 401 (if authenticated) and 500.
 */
export function errorResponses(codes: ErrorCode[]): Record<number, TSchema> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const code of [...codes, 'INTERNAL_ERROR' as const]) {
    const status = ERROR_CATALOGUE[code].status;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const out: Record<number, TSchema> = {};
  for (const [status, statusCodes] of byStatus) {
    out[status] = Type.Object(
      {
        // A plain string enum rather than a union of literals: it renders in OpenAPI as one
        // `enum` per status, and serializes as a string without trying each branch.
        code: Type.Unsafe<ErrorCode>({ type: 'string', enum: statusCodes }),
        message: Type.String(),
        details: Type.Optional(Type.Object({}, { additionalProperties: true })),
      },
      { description: statusCodes.map((c) => `${c}: ${ERROR_CATALOGUE[c].message}`).join(' | ') },
    );
  }
  return out;
}

export const Timestamp = Type.String({ format: 'date-time' });
