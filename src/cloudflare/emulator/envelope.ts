/**
 * The v4 response envelope and the error codes the emulator answers with.
 *
 * Codes marked "live" are what the real API is known to send (see
 * /work/shared/seeds/README.md and public reports); the others are the emulator's
 * choice where the live code is undocumented, so callers should branch on the HTTP
 * status for those, not on the code.
 */

export const ErrorCode = {
  /** live: tunnel has connectors and delete was not cascaded. */
  TUNNEL_HAS_CONNECTIONS: 1022,
  /** live: a non-deleted tunnel already has this name. */
  TUNNEL_NAME_CONFLICT: 1013,
  /** emulator: unknown or deleted tunnel (HTTP 404). */
  TUNNEL_NOT_FOUND: 1003,
  /** emulator: invalid tunnel request body / query (HTTP 400). */
  TUNNEL_INVALID_REQUEST: 1001,
  /** emulator: account already holds maxTunnels live tunnels (HTTP 400). */
  TUNNEL_LIMIT_REACHED: 1014,
  /** live: CNAME where a record with that name exists, or A/AAAA where a CNAME exists. */
  DNS_HOST_CONFLICT: 81053,
  /** live: identical record already exists. */
  DNS_IDENTICAL_RECORD: 81058,
  /** live: DNS record not found (HTTP 404). */
  DNS_RECORD_NOT_FOUND: 81044,
  /** live-ish: DNS validation error (HTTP 400). */
  DNS_VALIDATION: 1004,
  /** live: authentication error (HTTP 403). */
  AUTH_ERROR: 10000,
  /** live: token cannot access this account/zone (HTTP 403). */
  UNAUTHORIZED_RESOURCE: 9109,
  /** live: rate limited (HTTP 429). */
  RATE_LIMITED: 971,
  /** live: malformed JSON body (HTTP 400). */
  MALFORMED_JSON: 6007,
  /** live: no route for that URI (emulator answers HTTP 404). */
  NO_ROUTE: 7000,
  /** live: identifier in the path is malformed (HTTP 400). */
  INVALID_IDENTIFIER: 7003,
  /** emulator: invalid Access request (HTTP 400); the live API answers 12xxx codes with access.api.error.* messages. */
  ACCESS_INVALID: 12000,
  /** emulator: Access application or policy not found (HTTP 404). */
  ACCESS_NOT_FOUND: 12130,
  /** emulator: a reusable policy still attached to an application cannot be deleted (HTTP 400). */
  ACCESS_POLICY_IN_USE: 12131,
  /** emulator: another application already has this domain (HTTP 400). */
  ACCESS_DOMAIN_TAKEN: 12132,
  /** emulator: the account's 500 applications (or 500 reusable policies) are used up (HTTP 400). */
  ACCESS_LIMIT: 12133,
  /** emulator: injected 5xx. */
  INTERNAL: 10001,
  /** emulator: request body too large (HTTP 413). */
  BODY_TOO_LARGE: 10002,
} as const;

export interface ErrorItem {
  code: number;
  message: string;
}

export interface ApiReply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

export interface ResultInfo {
  page: number;
  per_page: number;
  count: number;
  total_count: number;
  total_pages: number;
}

export function ok(result: unknown, resultInfo?: ResultInfo): ApiReply {
  const body: Record<string, unknown> = { success: true, errors: [], messages: [], result };
  if (resultInfo) body.result_info = resultInfo;
  return { status: 200, body };
}

export function fail(status: number, code: number, message: string, headers?: Record<string, string>): ApiReply {
  return {
    status,
    body: { success: false, errors: [{ code, message }], messages: [], result: null },
    ...(headers ? { headers } : {}),
  };
}

/** Thrown inside handlers to short-circuit with an error envelope. */
export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: number,
    message: string,
  ) {
    super(message);
  }

  toReply(): ApiReply {
    return fail(this.status, this.code, this.message);
  }
}
