import { createVerifier, TokenError } from 'fast-jwt';
import type { Config } from '../config/env.js';
import type { Logger } from '../logging/logger.js';
import { isUsableUserId } from './access-token.js';
import { HEARTBEAT_SCOPE, HEARTBEAT_TOKEN_TYP, type HeartbeatGrant, type HeartbeatTokens } from './heartbeat-token.js';
import { JwksKeyStore, type JwksKeyStoreOptions } from './jwks-key-store.js';
import { isProviderAlgorithm, parsePublicKeyPem, PROVIDER_ALGORITHMS, type ProviderAlgorithm } from './provider-keys.js';
import { IdentityProviderUnavailableError, InvalidTokenError } from './token-errors.js';

/** Who a request is: a user (any route), or a heartbeat grant (one tunnel's heartbeat only). */
export type Principal =
  | { kind: 'user'; userId: string; /** The token's `email` claim, when it has one (Access allow-lists include the owner). */ email?: string }
  | ({ kind: 'heartbeat' } & HeartbeatGrant);

/** Tuning of the JWKS key store; the URL comes from the config. */
export type JwksTuning = Omit<JwksKeyStoreOptions, 'url' | 'logger'>;

export interface TokenVerifierOptions {
  jwt: Config['jwt'];
  heartbeatTokens: HeartbeatTokens;
  /** Verifies the broker's own HS256 access tokens (the auth plugin passes @fastify/jwt's). */
  accessVerify?: (token: string) => Record<string, unknown>;
  logger: Logger;
  jwks?: JwksTuning;
}

// Verification is most of the heartbeat hot path: results are cached (until the token's
// expiry, at most ten minutes). Failures are not cached, so a key that arrives later works.
const CACHE = { cache: 10_000, cacheTTL: 600_000 } as const;

type SyncVerify = (token: string) => Record<string, unknown>;

/** How the broker's own access tokens are verified: HS256 over JWT_SECRET, `sub` and `exp` required. */
export const ACCESS_TOKEN_VERIFY = { algorithms: ['HS256'], requiredClaims: ['sub', 'exp'], ...CACHE } as const;
const ACCESS_TOKEN_VERIFY_OPTIONS = (secret: string) => ({ key: secret, ...ACCESS_TOKEN_VERIFY, algorithms: [...ACCESS_TOKEN_VERIFY.algorithms], requiredClaims: [...ACCESS_TOKEN_VERIFY.requiredClaims] });
type AsyncVerify = (token: string) => Promise<Record<string, unknown>>;

/**
 * Routes each bearer token to the one verifier its header's `alg` (and `typ`) calls for, and
 * each verifier accepts only its own algorithm with its own key:
 *
 *   HS256, typ tb-heartbeat+jwt  -> heartbeat token, key derived from JWT_SECRET (HKDF)
 *   HS256, anything else         -> access token, JWT_SECRET, user in `sub`
 *   RS256 / ES256                -> the identity provider: JWT_PUBLIC_KEY (only the algorithm
 *                                   of that key) or JWT_JWKS_URL (by kid, the key's own
 *                                   algorithm); JWT_ISSUER / JWT_AUDIENCE when set; user in
 *                                   JWT_USER_CLAIM
 *   anything else (none, HS512, PS256 …), or RS256/ES256 with no provider -> 401
 *
 * The routing reads the header unverified, which is safe because it only picks a verifier
 * that will then check the signature with a key the token cannot choose: an RS256 public key
 * is never an HMAC secret, and JWT_SECRET never verifies RS256 or ES256.
 */
export class TokenVerifier {
  readonly #heartbeatTokens: HeartbeatTokens;
  readonly #access: SyncVerify;
  readonly #provider: AsyncVerify | SyncVerify | undefined;
  readonly #providerAlgorithms: readonly ProviderAlgorithm[];
  readonly #userClaim: string;
  /** Present with JWT_JWKS_URL. */
  readonly jwks: JwksKeyStore | undefined;

  readonly #headers = new Map<string, Readonly<Record<string, unknown>>>();

  constructor(options: TokenVerifierOptions) {
    const { jwt } = options;
    this.#heartbeatTokens = options.heartbeatTokens;
    this.#userClaim = jwt.userClaim;
    this.#access = options.accessVerify ?? createVerifier(ACCESS_TOKEN_VERIFY_OPTIONS(jwt.secret));

    // A claim that is checked must also be present: fast-jwt skips checks of absent claims.
    const providerChecks = {
      requiredClaims: ['exp', jwt.userClaim, ...(jwt.issuer ? ['iss'] : []), ...(jwt.audience ? ['aud'] : [])],
      ...(jwt.issuer ? { allowedIss: jwt.issuer } : {}),
      ...(jwt.audience ? { allowedAud: jwt.audience } : {}),
      ...CACHE,
    };
    if (jwt.publicKey !== undefined) {
      // Already validated at boot (loadConfig); this cannot throw for a loaded config.
      const key = parsePublicKeyPem(jwt.publicKey);
      this.#providerAlgorithms = [key.algorithm];
      this.#provider = createVerifier({ key: key.pem, algorithms: [key.algorithm], ...providerChecks });
    } else if (jwt.jwksUrl !== undefined) {
      const jwks = new JwksKeyStore({ ...options.jwks, url: jwt.jwksUrl, logger: options.logger });
      this.jwks = jwks;
      this.#providerAlgorithms = PROVIDER_ALGORITHMS;
      this.#provider = createVerifier({
        // The key is looked up by the token's alg and kid, and exists only for the algorithm
        // of its own type, so an ES256 header can never select an RSA key or the reverse.
        key: async ({ header }: { header: Record<string, unknown> }) => {
          const alg = header.alg;
          if (!isProviderAlgorithm(alg)) throw new InvalidTokenError('Unsupported algorithm.');
          const kid = header.kid;
          if (kid !== undefined && typeof kid !== 'string') throw new InvalidTokenError('The kid header must be a string.');
          return jwks.getKey(alg, kid);
        },
        algorithms: [...PROVIDER_ALGORITHMS],
        ...providerChecks,
      });
    } else {
      this.#providerAlgorithms = [];
    }
  }

  /** Throws InvalidTokenError (401) or IdentityProviderUnavailableError (503). */
  async verify(token: string): Promise<Principal> {
    const header = this.#readHeader(token);
    if (header.alg === 'HS256') {
      if (header.typ === HEARTBEAT_TOKEN_TYP) return { kind: 'heartbeat', ...this.#heartbeatTokens.verify(token) };
      const claims = this.#run(this.#access, token);
      // Belt and braces: only the heartbeat key signs this scope.
      if (claims.scope === HEARTBEAT_SCOPE) throw new InvalidTokenError();
      return { kind: 'user', userId: usableUserId(claims.sub, 'sub'), ...emailClaim(claims) };
    }
    if (isProviderAlgorithm(header.alg) && this.#provider && this.#providerAlgorithms.includes(header.alg)) {
      const claims = await this.#runProvider(token);
      return { kind: 'user', userId: usableUserId(claims[this.#userClaim], this.#userClaim), ...emailClaim(claims) };
    }
    throw new InvalidTokenError('Unsupported token algorithm.');
  }

  /**
   * Every heartbeat token has the same header, and access tokens a handful: decoding it was
   * ~2 % of a heartbeat's CPU (bench/notes.md), so decoded headers are kept by their encoded
   * form. Bounded: headers past the first HEADER_CACHE_SIZE are decoded every time.
   */
  #readHeader(token: string): Readonly<Record<string, unknown>> {
    const dot = token.indexOf('.');
    const encoded = dot > 0 ? token.slice(0, dot) : token;
    const known = this.#headers.get(encoded);
    if (known) return known;
    const header = Object.freeze(readHeader(token));
    if (this.#headers.size < HEADER_CACHE_SIZE) this.#headers.set(encoded, header);
    return header;
  }

  #run(verify: SyncVerify, token: string): Record<string, unknown> {
    try {
      return verify(token);
    } catch (error) {
      throw new InvalidTokenError(undefined, { cause: error });
    }
  }

  async #runProvider(token: string): Promise<Record<string, unknown>> {
    try {
      return await this.#provider!(token);
    } catch (error) {
      // fast-jwt wraps what the key lookup threw.
      const cause = error instanceof TokenError ? (error as TokenError & { originalError?: unknown }).originalError ?? error : error;
      if (cause instanceof IdentityProviderUnavailableError) throw cause;
      throw new InvalidTokenError(undefined, { cause });
    }
  }
}

function emailClaim(claims: Record<string, unknown>): { email?: string } {
  const email = claims.email;
  return typeof email === 'string' && email.length > 0 && email.length <= 254 ? { email } : {};
}

function usableUserId(id: unknown, claim: string): string {
  if (!isUsableUserId(id)) {
    throw new InvalidTokenError(`The token's ${JSON.stringify(claim)} claim is not a usable user id (a string of 1-200 characters without control characters).`, { public: true });
  }
  return id;
}

/** The JOSE header, unverified: only used to pick a verifier. */
/** Distinct token headers whose decoding is remembered (see TokenVerifier#readHeader). */
export const HEADER_CACHE_SIZE = 64;

function readHeader(token: string): Record<string, unknown> {
  const dot = token.indexOf('.');
  // A header of a few hundred bytes is plenty; refuse to decode more before any check.
  if (dot <= 0 || dot > 2048) throw new InvalidTokenError();
  try {
    const header: unknown = JSON.parse(Buffer.from(token.slice(0, dot), 'base64url').toString('utf8'));
    if (typeof header === 'object' && header !== null && !Array.isArray(header)) return header as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new InvalidTokenError();
}
