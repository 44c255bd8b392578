/**
 * The one catalogue of error codes the API can answer with. Every error body is
 * `{code, message, details?}`; the status comes from here and nowhere else.
 */
export const ERROR_CATALOGUE = {
  INVALID_INPUT: { status: 400, message: 'The request is invalid.' },
  INVALID_PORT: { status: 400, message: 'port must be an integer between 1 and 65535.' },
  UNAUTHORIZED: { status: 401, message: 'A valid bearer token is required.' },
  FORBIDDEN: { status: 403, message: 'This token does not allow that request.' },
  ACCESS_PUBLIC_FORBIDDEN: { status: 403, message: 'Public tunnels are not allowed here; choose the team or a list of emails.' },
  TUNNEL_NOT_FOUND: { status: 404, message: 'Tunnel not found.' },
  NOT_FOUND: { status: 404, message: 'Route not found.' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed.' },
  TUNNEL_SLUG_CONFLICT: { status: 409, message: 'That slug is already in use.' },
  TUNNEL_DELETED_DURING_CREATE: { status: 409, message: 'The tunnel was deleted while it was being created; nothing is left of it.' },
  IDEMPOTENCY_KEY_IN_USE: { status: 409, message: 'A request with this Idempotency-Key is still in progress; retry later.' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'The request body is too large.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'The request body must be application/json.' },
  IDEMPOTENCY_KEY_REUSED: { status: 422, message: 'This Idempotency-Key was already used with a different request body.' },
  TUNNEL_LIMIT_EXCEEDED: { status: 429, message: 'You have reached the maximum number of live tunnels.' },
  RATE_LIMITED: { status: 429, message: 'Too many requests; retry later.' },
  INTERNAL_ERROR: { status: 500, message: 'Internal server error.' },
  // Create and delete both answer these: neutral here, and each path may say more (see UPSTREAM_FAILURE_MESSAGES).
  UPSTREAM_ERROR: { status: 502, message: 'The tunnel provider failed; retry later.' },
  UPSTREAM_UNAVAILABLE: { status: 503, message: 'The tunnel provider is unavailable; retry later.' },
  TUNNEL_CAPACITY_EXHAUSTED: { status: 503, message: 'Every tunnel slot is in use; retry later.' },
  SLUG_EXHAUSTED: { status: 503, message: 'Could not find a free random slug; retry.' },
  SERVICE_UNAVAILABLE: { status: 503, message: 'The service is temporarily unavailable; retry later.' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

/**
 * What an upstream failure means depends on what was being done: a failed create has been
 * rolled back, a failed delete leaves the tunnel ending, with the reaper retrying. For the
 * service to pass as `message` on that path.
 */
export const UPSTREAM_FAILURE_MESSAGES = {
  create: {
    UPSTREAM_ERROR: 'The tunnel provider failed; nothing was created.',
    UPSTREAM_UNAVAILABLE: 'The tunnel provider is unavailable; nothing was created. Retry later.',
  },
  access: {
    UPSTREAM_ERROR: 'The tunnel provider failed; the tunnel may still have its previous audience. Retry the change.',
    UPSTREAM_UNAVAILABLE: 'The tunnel provider is unavailable; the tunnel may still have its previous audience. Retry the change later.',
  },
  delete: {
    UPSTREAM_ERROR: 'The tunnel provider failed; the tunnel is being ended and its removal will be retried.',
    UPSTREAM_UNAVAILABLE: 'The tunnel provider is unavailable; the tunnel is being ended and its removal will be retried.',
  },
} as const satisfies Record<string, Partial<Record<ErrorCode, string>>>;
export const ERROR_CODES = Object.keys(ERROR_CATALOGUE) as ErrorCode[];

export interface AppErrorOptions {
  message?: string;
  details?: Record<string, unknown>;
  /** Seconds; sent as Retry-After. */
  retryAfterSec?: number;
  cause?: unknown;
}

/** An error the API answers with as-is. Anything else becomes INTERNAL_ERROR. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number;
  readonly details: Record<string, unknown> | undefined;
  readonly retryAfterSec: number | undefined;

  constructor(code: ErrorCode, options: AppErrorOptions = {}) {
    super(options.message ?? ERROR_CATALOGUE[code].message, { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.statusCode = ERROR_CATALOGUE[code].status;
    this.details = options.details;
    this.retryAfterSec = options.retryAfterSec;
  }
}

export function isAppError(error: unknown): error is AppError {
  return error instanceof AppError;
}
