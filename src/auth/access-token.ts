import { createSigner } from 'fast-jwt';

export const DEFAULT_TOKEN_TTL_SECONDS = 30 * 24 * 3600;
export const MAX_USER_ID_LENGTH = 200;

/**
 * A user id the broker can store and compare: 1-200 UTF-16 units, no control characters
 * (PostgreSQL text cannot hold NUL) and no unpaired surrogates (they encode to U+FFFD in
 * UTF-8, so two different ids would name the same owner).
 */
export function isUsableUserId(id: unknown): id is string {
  return typeof id === 'string' && id.length > 0 && id.length <= MAX_USER_ID_LENGTH && !/[\p{Cc}\p{Cs}]/u.test(id);
}

/** Parses "30d", "12h", "15m", "45s" or a number of seconds. */
export function parseDuration(text: string): number {
  const match = /^(\d+)\s*([smhdw]?)$/.exec(text.trim());
  if (!match) throw new Error(`Not a duration: ${JSON.stringify(text)} (use e.g. 30d, 12h, 15m, 3600)`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 }[match[2] as '' | 's' | 'm' | 'h' | 'd' | 'w'];
  const seconds = Number(match[1]) * unit;
  if (seconds <= 0) throw new Error('A token lifetime must be positive');
  return seconds;
}

/**
 * Signs an access token the API accepts: HS256 over JWT_SECRET, `sub` = user id, with `exp`.
 * The same verifier settings live in the auth plugin; tests prove the two agree.
 */
export function signAccessToken(secret: string, userId: string, ttlSeconds = DEFAULT_TOKEN_TTL_SECONDS): string {
  if (userId.length === 0) throw new Error('A user id is required');
  if (!isUsableUserId(userId)) throw new Error(`A user id must be at most ${MAX_USER_ID_LENGTH} characters, without control characters`);
  const sign = createSigner({ key: secret, algorithm: 'HS256', expiresIn: ttlSeconds * 1000 });
  return sign({ sub: userId });
}
