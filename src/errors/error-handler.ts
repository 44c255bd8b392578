import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { isDatabaseUnavailable } from '../db/database-error.js';
import { isRedisUnavailable } from '../plugins/redis.js';
import { AppError, ERROR_CATALOGUE, type ErrorCode, isAppError } from './catalogue.js';

/**
 * The one place that turns errors into responses. AppErrors answer as they are;
 * Fastify's own client errors map onto the catalogue; anything else is a 500 that
 * says nothing about its cause (the cause goes to the log only).
 */
export function toAppError(error: unknown): AppError {
  if (isAppError(error)) return error;
  const fastifyError = error as Partial<FastifyError> | undefined;
  if (fastifyError?.validation) {
    return new AppError('INVALID_INPUT', {
      message: `Invalid ${fastifyError.validationContext ?? 'request'}: ${fastifyError.message ?? ''}`.trim(),
      details: {
        issues: fastifyError.validation.map((v) => ({ path: v.instancePath || '/', message: v.message ?? 'invalid' })),
      },
    });
  }
  switch (fastifyError?.code) {
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AppError('INVALID_INPUT', { message: 'The request body is empty; a JSON object is required.' });
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new AppError('INVALID_INPUT', { message: 'The request body is not valid JSON.' });
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError('PAYLOAD_TOO_LARGE');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AppError('UNSUPPORTED_MEDIA_TYPE');
    case 'FST_ERR_BAD_URL':
      return new AppError('INVALID_INPUT', { message: 'The URL is not valid (malformed percent-encoding).' });
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new AppError('INVALID_INPUT', { message: 'A path parameter is too long.' });
  }
  // PostgreSQL or Redis away: a clean, retryable 503 rather than a 500.
  if (isDatabaseUnavailable(error) || isRedisUnavailable(error)) {
    return new AppError('SERVICE_UNAVAILABLE', { retryAfterSec: 2, cause: error });
  }
  const status = fastifyError?.statusCode;
  // Fastify's remaining client errors (bad content-length, invalid URL, etc.) are the caller's fault.
  if (typeof status === 'number' && status >= 400 && status < 500) {
    const code: ErrorCode = status === 404 ? 'NOT_FOUND' : status === 413 ? 'PAYLOAD_TOO_LARGE' : status === 415 ? 'UNSUPPORTED_MEDIA_TYPE' : 'INVALID_INPUT';
    return new AppError(code);
  }
  return new AppError('INTERNAL_ERROR', { cause: error });
}

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

/** The JSON envelope an error answers with (also what an idempotent replay stores). */
export function errorBody(error: AppError): ErrorBody {
  const body: ErrorBody = {
    code: error.code,
    message: error.statusCode >= 500 && error.code === 'INTERNAL_ERROR' ? ERROR_CATALOGUE.INTERNAL_ERROR.message : error.message,
  };
  if (error.details) body.details = error.details;
  return body;
}

export function sendError(reply: FastifyReply, error: AppError): FastifyReply {
  if (error.retryAfterSec !== undefined) reply.header('retry-after', String(Math.max(1, Math.ceil(error.retryAfterSec))));
  return reply.code(error.statusCode).type('application/json; charset=utf-8').send(errorBody(error));
}

/**
 * Also Fastify's `frameworkErrors` option: errors the router raises before any route or
 * hook runs (a malformed percent-encoding, an over-long path parameter) would otherwise be
 * answered in Fastify's own format instead of the envelope.
 */
export function handleError(error: unknown, request: FastifyRequest, reply: FastifyReply) {
  const appError = toAppError(error);
  if (appError.code === 'SERVICE_UNAVAILABLE') {
    request.log.warn({ err: error, code: appError.code, event: 'request.dependency_unavailable' }, 'a dependency is unavailable');
  } else if (appError.statusCode >= 500) {
    request.log.error({ err: error, code: appError.code, event: 'request.failed' }, 'request failed');
  } else {
    request.log.info({ code: appError.code }, appError.message);
  }
  return sendError(reply, appError);
}

export const errorHandlerPlugin = fp(
  async (app: FastifyInstance) => {
    app.setErrorHandler(handleError);
    app.setNotFoundHandler((request, reply) => sendError(reply, new AppError('NOT_FOUND', { message: `Route ${request.method} ${request.url.split('?')[0]} not found.` })));
  },
  { name: 'error-handler', fastify: '5.x' },
);
