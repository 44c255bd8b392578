import { hkdfSync } from 'node:crypto';
import { createSigner, createVerifier } from 'fast-jwt';
import { isLowerCaseUuid } from '../util/uuid.js';
import { isUsableUserId } from './access-token.js';
import { InvalidTokenError } from './token-errors.js';

/**
 * Heartbeat tokens: a credential that can heartbeat one tunnel and nothing else, so a
 * long-running agent need not hold its user's (maybe short-lived) access token.
 *
 *   header  {alg: HS256, typ: "tb-heartbeat+jwt"}
 *   claims  {sub: owner, tid: tunnel id, scope: "tunnel:heartbeat", iat, exp}
 *
 * The key is derived from JWT_SECRET with HKDF under a label of its own, so an access token
 * (signed with JWT_SECRET itself) never verifies as a heartbeat token, nor the reverse; the
 * `typ` header and `scope` claim are checked as well, so neither key mix-up nor a routing
 * mistake can turn one into the other.
 *
 * Nothing is stored: the token dies with its tunnel because a heartbeat only refreshes a live
 * tunnel's Redis key whose owner equals `sub`, and an ended tunnel has none (its id, a UUID,
 * is never reused). The expiry is defence in depth; a heartbeat renews a token that is
 * close to it, so an agent running for months is not cut off.
 */

export const HEARTBEAT_TOKEN_TYP = 'tb-heartbeat+jwt';
export const HEARTBEAT_SCOPE = 'tunnel:heartbeat';
export const HEARTBEAT_TOKEN_TTL_SECONDS = 30 * 86_400;
/** A heartbeat made with a token that has less than this left answers with a fresh one. */
export const HEARTBEAT_TOKEN_RENEW_BEFORE_SECONDS = 10 * 86_400;

const HKDF_SALT = 'tunnel-broker heartbeat-token';
// Changing the label invalidates every heartbeat token in circulation.
const HKDF_INFO = 'heartbeat-token/v1/hs256';

/** The HMAC key of heartbeat tokens: never JWT_SECRET itself. */
export function deriveHeartbeatTokenKey(secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, HKDF_SALT, HKDF_INFO, 32));
}

export interface HeartbeatGrant {
  userId: string;
  tunnelId: string;
  /** Epoch ms. */
  expiresAtMs: number;
}

export interface HeartbeatTokensOptions {
  ttlSeconds?: number;
  renewBeforeSeconds?: number;
}

export class HeartbeatTokens {
  readonly ttlSeconds: number;
  readonly renewBeforeSeconds: number;
  readonly #sign: (payload: Record<string, unknown>) => string;
  readonly #verify: (token: string) => Record<string, unknown>;

  constructor(secret: string, options: HeartbeatTokensOptions = {}) {
    this.ttlSeconds = options.ttlSeconds ?? HEARTBEAT_TOKEN_TTL_SECONDS;
    this.renewBeforeSeconds = Math.min(options.renewBeforeSeconds ?? HEARTBEAT_TOKEN_RENEW_BEFORE_SECONDS, this.ttlSeconds);
    const key = deriveHeartbeatTokenKey(secret);
    this.#sign = createSigner({ key, algorithm: 'HS256', expiresIn: this.ttlSeconds * 1000, header: { alg: 'HS256', typ: HEARTBEAT_TOKEN_TYP } });
    this.#verify = createVerifier({
      key,
      algorithms: ['HS256'],
      checkTyp: HEARTBEAT_TOKEN_TYP,
      requiredClaims: ['sub', 'tid', 'scope', 'exp'],
      // Verification is most of the heartbeat hot path; results are cached until expiry.
      cache: 10_000,
      cacheTTL: 600_000,
    });
  }

  sign(userId: string, tunnelId: string): string {
    return this.#sign({ sub: userId, tid: tunnelId, scope: HEARTBEAT_SCOPE });
  }

  /** Throws InvalidTokenError unless this is an intact, unexpired heartbeat token. */
  verify(token: string): HeartbeatGrant {
    let claims: Record<string, unknown>;
    try {
      claims = this.#verify(token);
    } catch (error) {
      throw new InvalidTokenError('The heartbeat token is not valid.', { cause: error });
    }
    const { sub, tid, scope, exp } = claims;
    if (scope !== HEARTBEAT_SCOPE || !isUsableUserId(sub) || typeof tid !== 'string' || !isLowerCaseUuid(tid) || typeof exp !== 'number') {
      throw new InvalidTokenError('The heartbeat token is not valid.');
    }
    return { userId: sub, tunnelId: tid, expiresAtMs: exp * 1000 };
  }

  shouldRenew(grant: HeartbeatGrant, now = Date.now()): boolean {
    return grant.expiresAtMs - now < this.renewBeforeSeconds * 1000;
  }
}
