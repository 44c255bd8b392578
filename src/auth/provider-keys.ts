import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';

/**
 * Keys of an external identity provider. Each key verifies exactly one algorithm, decided by
 * the key itself (RSA: RS256, EC P-256: ES256), never by the token: that is what makes
 * algorithm confusion impossible on this side.
 */

export type ProviderAlgorithm = 'RS256' | 'ES256';
export const PROVIDER_ALGORITHMS: readonly ProviderAlgorithm[] = ['RS256', 'ES256'];
export const MIN_RSA_MODULUS_BITS = 2048;

export interface ProviderKey {
  algorithm: ProviderAlgorithm;
  /** SPKI PEM: the form fast-jwt takes, whatever the key arrived as. */
  pem: string;
}

export function isProviderAlgorithm(alg: unknown): alg is ProviderAlgorithm {
  return alg === 'RS256' || alg === 'ES256';
}

/** The one algorithm this public key may verify. Throws with a reason an operator can act on. */
function algorithmOf(key: KeyObject): ProviderAlgorithm {
  if (key.asymmetricKeyType === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_MODULUS_BITS) throw new Error(`an RSA key of ${bits} bits is too weak (at least ${MIN_RSA_MODULUS_BITS} bits)`);
    return 'RS256';
  }
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256';
  const curve = key.asymmetricKeyDetails?.namedCurve;
  throw new Error(`a ${key.asymmetricKeyType ?? 'unknown'}${curve ? ` (${curve})` : ''} key is not supported: use RSA (RS256) or EC P-256 (ES256)`);
}

/** JWT_PUBLIC_KEY: a PEM public key (SPKI, PKCS#1 or a certificate). Throws with the reason. */
export function parsePublicKeyPem(text: string): ProviderKey {
  // createPublicKey would quietly derive the public half, but a private key in the config
  // is a leak the operator must hear about.
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) {
    throw new Error('this is a private key; give its public key (openssl pkey -in key.pem -pubout)');
  }
  let key: KeyObject;
  try {
    key = createPublicKey(text);
  } catch {
    throw new Error('not a PEM public key (expected -----BEGIN PUBLIC KEY----- …; newlines may be written as \\n)');
  }
  return { algorithm: algorithmOf(key), pem: key.export({ type: 'spki', format: 'pem' }) as string };
}

/**
 * One entry of a JWKS, or null when it is not a signature key this broker can use (another
 * key type, curve or algorithm, an encryption key, a weak RSA key, or malformed).
 * Only the public members are read, so an entry that carries private members by mistake
 * still yields nothing but its public key.
 */
export function parseJwk(jwk: unknown): (ProviderKey & { kid: string | undefined }) | null {
  if (typeof jwk !== 'object' || jwk === null) return null;
  const entry = jwk as Record<string, unknown>;
  if (entry.use !== undefined && entry.use !== 'sig') return null;
  if (entry.key_ops !== undefined && !(Array.isArray(entry.key_ops) && entry.key_ops.includes('verify'))) return null;
  const kid = typeof entry.kid === 'string' ? entry.kid : undefined;
  let material: JsonWebKey;
  if (entry.kty === 'RSA' && typeof entry.n === 'string' && typeof entry.e === 'string') {
    material = { kty: 'RSA', n: entry.n, e: entry.e };
  } else if (entry.kty === 'EC' && entry.crv === 'P-256' && typeof entry.x === 'string' && typeof entry.y === 'string') {
    material = { kty: 'EC', crv: 'P-256', x: entry.x, y: entry.y };
  } else {
    return null;
  }
  try {
    const key = createPublicKey({ key: material, format: 'jwk' });
    const algorithm = algorithmOf(key);
    // A key published for another algorithm (PS256, RS512 …) is not ours to use for this one.
    if (entry.alg !== undefined && entry.alg !== algorithm) return null;
    return { kid, algorithm, pem: key.export({ type: 'spki', format: 'pem' }) as string };
  } catch {
    return null;
  }
}
