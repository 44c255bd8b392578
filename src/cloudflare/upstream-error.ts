import { APIConnectionError, APIError } from 'cloudflare/core/error';

/**
 * What went wrong upstream, in the broker's terms. The SDK's errors are translated
 * here, at the boundary, so nothing above this layer knows Cloudflare's codes.
 */
export type UpstreamFailureKind =
  /** 429: the account's API budget is spent for now. */
  | 'rate_limited'
  /** Timeouts, connection failures, 502/503/504: worth retrying later. */
  | 'unavailable'
  /** The resource does not exist (or is already deleted). */
  | 'not_found'
  /** A tunnel with that name already exists (409, error 1013). */
  | 'tunnel_name_taken'
  /** A DNS record with that name already exists (400, error 81053 or 81058) and is not ours. */
  | 'dns_record_exists'
  /** The tunnel still has connectors (error 1022). */
  | 'tunnel_has_connections'
  /** Credentials or permissions (401/403, errors 10000/9109). */
  | 'unauthorized'
  /**
   * A tunnel create refused while the account holds as many tunnels as it may (counted after
   * the refusal: Cloudflare documents its 1,000-tunnel limit but no error code for it).
   */
  | 'account_full'
  /** Anything else Cloudflare refused or failed with. */
  | 'failed';

export const CF_ERROR = {
  TUNNEL_NAME_TAKEN: 1013,
  TUNNEL_HAS_CONNECTIONS: 1022,
  DNS_RECORD_EXISTS: 81053,
  DNS_IDENTICAL_RECORD_EXISTS: 81058,
  DNS_RECORD_NOT_FOUND: 81044,
  RATE_LIMITED: 971,
} as const;

/**
 * Marks a 429 that the broker's own request budget answered in place of Cloudflare (see
 * BudgetGate): the request never left the process. Its value is the wait in milliseconds.
 */
export const BUDGET_RETRY_AFTER_MS_HEADER = 'x-tunnel-broker-budget-retry-after-ms';

export interface UpstreamErrorOptions {
  cause?: unknown;
  /** Refused by the broker's request budget; nothing was sent. */
  budgetExhausted?: boolean;
  /** Certain to have left nothing behind upstream (a create that was refused or never sent). */
  nothingCreated?: boolean;
}

export class UpstreamError extends Error {
  readonly budgetExhausted: boolean;
  readonly nothingCreated: boolean;

  constructor(
    readonly kind: UpstreamFailureKind,
    readonly operation: string,
    readonly status: number | undefined,
    readonly cloudflareCodes: number[],
    readonly retryAfterSec: number | undefined,
    options: UpstreamErrorOptions = {},
  ) {
    super(
      options.budgetExhausted
        ? `Cloudflare ${operation} not sent: the broker's Cloudflare request budget is spent`
        : `Cloudflare ${operation} failed: ${kind}${status ? ` (HTTP ${status}${cloudflareCodes.length ? `, codes ${cloudflareCodes.join(',')}` : ''})` : ''}`,
      { cause: options.cause },
    );
    this.name = 'UpstreamError';
    this.budgetExhausted = options.budgetExhausted ?? false;
    this.nothingCreated = options.nothingCreated ?? false;
  }

  /** Transient: the same call may succeed later. */
  get transient(): boolean {
    return this.kind === 'rate_limited' || this.kind === 'unavailable';
  }
}

export function isUpstreamError(error: unknown): error is UpstreamError {
  return error instanceof UpstreamError;
}

export function translateUpstreamError(operation: string, error: unknown): UpstreamError {
  if (error instanceof UpstreamError) return error;
  if (error instanceof APIConnectionError || !(error instanceof APIError)) {
    // Timeouts, refused connections, DNS failures, aborted requests, and anything
    // thrown below the SDK's own error types.
    return new UpstreamError('unavailable', operation, undefined, [], undefined, { cause: error });
  }
  const budgetRetryAfterMs = Number(error.headers?.get(BUDGET_RETRY_AFTER_MS_HEADER) ?? Number.NaN);
  if (Number.isFinite(budgetRetryAfterMs)) {
    return new UpstreamError('rate_limited', operation, undefined, [], budgetRetryAfterMs / 1000, { cause: error, budgetExhausted: true });
  }
  const status = error.status;
  const codes = (error.errors ?? []).map((e) => Number(e.code)).filter((c) => Number.isFinite(c));
  const retryAfter = parseRetryAfter(error.headers?.get('retry-after') ?? null);
  let kind: UpstreamFailureKind;
  if (status === 429 || codes.includes(CF_ERROR.RATE_LIMITED)) kind = 'rate_limited';
  else if (codes.includes(CF_ERROR.TUNNEL_NAME_TAKEN)) kind = 'tunnel_name_taken';
  else if (codes.includes(CF_ERROR.DNS_RECORD_EXISTS) || codes.includes(CF_ERROR.DNS_IDENTICAL_RECORD_EXISTS)) kind = 'dns_record_exists';
  else if (codes.includes(CF_ERROR.TUNNEL_HAS_CONNECTIONS)) kind = 'tunnel_has_connections';
  else if (status === 404 || codes.includes(CF_ERROR.DNS_RECORD_NOT_FOUND)) kind = 'not_found';
  else if (status === 401 || status === 403) kind = 'unauthorized';
  else if (status === 408 || status === 502 || status === 503 || status === 504) kind = 'unavailable';
  else kind = 'failed';
  return new UpstreamError(kind, operation, status, codes, retryAfter, { cause: error });
}

function parseRetryAfter(value: string | null): number | undefined {
  if (!value) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}
