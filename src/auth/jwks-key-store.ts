import { LogEvent, type Logger } from '../logging/logger.js';
import { parseJwk, type ProviderAlgorithm, type ProviderKey } from './provider-keys.js';
import { IdentityProviderUnavailableError, InvalidTokenError } from './token-errors.js';

/**
 * The keys of an identity provider's JWKS, by `kid` and algorithm.
 *
 * Not get-jwks: its `timeout` fetch option is ignored by Node's own fetch (a JWKS endpoint
 * that accepts the connection and never answers holds requests for minutes), and every token
 * with an unknown `kid` makes it fetch again, so anyone could make the broker hammer the
 * identity provider. Here:
 * - the whole set is fetched at once, at most one fetch at a time, with a timeout that
 *   covers the body, a size cap and no redirects;
 * - a `kid` not in the set triggers a refresh only if the last fetch was at least
 *   `minRefreshIntervalMs` ago (new keys are published before they sign anything, so a
 *   rotation is picked up; a flood of made-up kids costs one fetch per interval);
 * - a set older than `maxAgeMs` is refreshed in the background while it keeps serving;
 * - a failed fetch keeps the keys already known (an outage of the identity provider does not
 *   log everybody out); a kid that cannot be looked up because of it is "unavailable" (503),
 *   one that a successful fetch does not contain is "invalid" (401).
 */

export interface JwksKeyStoreOptions {
  url: string;
  logger: Logger;
  /** Per fetch, body included. */
  timeoutMs?: number;
  /** Least time between two fetches caused by unknown kids or by age. */
  minRefreshIntervalMs?: number;
  /** After this, the set is refreshed in the background on the next lookup. */
  maxAgeMs?: number;
  maxBytes?: number;
  maxKeys?: number;
  /** The clock of the refresh intervals (tests move it instead of waiting). */
  now?: () => number;
}

export const JWKS_DEFAULTS = {
  timeoutMs: 5_000,
  minRefreshIntervalMs: 30_000,
  maxAgeMs: 10 * 60_000,
  maxBytes: 512 * 1024,
  maxKeys: 100,
} as const;

type KeyMap = Map<string, ProviderKey>;

const mapKey = (algorithm: ProviderAlgorithm, kid: string | undefined) => `${algorithm}\u0000${kid ?? ''}`;

export class JwksKeyStore {
  readonly #url: string;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  readonly #minRefreshIntervalMs: number;
  readonly #maxAgeMs: number;
  readonly #maxBytes: number;
  readonly #maxKeys: number;
  readonly #now: () => number;
  #keys: KeyMap = new Map();
  /** Keys without a kid, by algorithm: usable by a kid-less token only when alone. */
  #kidless = new Map<ProviderAlgorithm, ProviderKey[]>();
  #lastAttemptAt = Number.NEGATIVE_INFINITY;
  #lastSuccessAt = Number.NEGATIVE_INFINITY;
  #lastError: Error | undefined;
  #inFlight: Promise<void> | undefined;
  /** Fetches started, for tests and diagnostics. */
  fetchCount = 0;

  constructor(options: JwksKeyStoreOptions) {
    this.#url = options.url;
    this.#log = options.logger;
    this.#timeoutMs = options.timeoutMs ?? JWKS_DEFAULTS.timeoutMs;
    this.#minRefreshIntervalMs = options.minRefreshIntervalMs ?? JWKS_DEFAULTS.minRefreshIntervalMs;
    this.#maxAgeMs = options.maxAgeMs ?? JWKS_DEFAULTS.maxAgeMs;
    this.#maxBytes = options.maxBytes ?? JWKS_DEFAULTS.maxBytes;
    this.#maxKeys = options.maxKeys ?? JWKS_DEFAULTS.maxKeys;
    this.#now = options.now ?? Date.now;
  }

  /**
   * The PEM key for a token's `alg` and `kid`. Throws InvalidTokenError when the set has no
   * such key, IdentityProviderUnavailableError when the set could not be fetched to find out.
   */
  async getKey(algorithm: ProviderAlgorithm, kid: string | undefined): Promise<string> {
    const known = this.#lookup(algorithm, kid);
    if (known) {
      if (this.#now() - this.#lastSuccessAt > this.#maxAgeMs) this.#refreshInBackground();
      return known.pem;
    }
    if (this.#inFlight) {
      await this.#inFlight;
    } else if (this.#canRefresh()) {
      await this.#refresh();
    }
    const found = this.#lookup(algorithm, kid);
    if (found) return found.pem;
    if (this.#lastError) {
      throw new IdentityProviderUnavailableError("The identity provider's keys could not be fetched; retry shortly.", { cause: this.#lastError });
    }
    throw new InvalidTokenError(`No ${algorithm} key${kid === undefined ? ' (and the token names none)' : ` with kid ${JSON.stringify(kid.slice(0, 100))}`} in the identity provider's key set.`);
  }

  #lookup(algorithm: ProviderAlgorithm, kid: string | undefined): ProviderKey | undefined {
    if (kid !== undefined) return this.#keys.get(mapKey(algorithm, kid));
    // A token without a kid is unambiguous only when the set holds one key for its algorithm.
    const candidates = [...(this.#kidless.get(algorithm) ?? []), ...[...this.#keys.values()].filter((k) => k.algorithm === algorithm)];
    return candidates.length === 1 ? candidates[0] : undefined;
  }

  #canRefresh(): boolean {
    return this.#now() - this.#lastAttemptAt >= this.#minRefreshIntervalMs;
  }

  #refreshInBackground(): void {
    if (this.#inFlight || !this.#canRefresh()) return;
    void this.#refresh();
  }

  /** One fetch at a time; never rejects (the outcome is in #lastError and the key maps). */
  #refresh(): Promise<void> {
    this.#inFlight ??= this.#fetchAndReplace().finally(() => {
      this.#inFlight = undefined;
    });
    return this.#inFlight;
  }

  async #fetchAndReplace(): Promise<void> {
    this.#lastAttemptAt = this.#now();
    this.fetchCount++;
    try {
      const body = await this.#fetchBody();
      const entries = (body as { keys?: unknown }).keys;
      if (!Array.isArray(entries)) throw new Error('the response has no "keys" array');
      const keys: KeyMap = new Map();
      const kidless = new Map<ProviderAlgorithm, ProviderKey[]>();
      for (const entry of entries.slice(0, this.#maxKeys)) {
        const key = parseJwk(entry);
        if (!key) continue;
        if (key.kid === undefined) kidless.set(key.algorithm, [...(kidless.get(key.algorithm) ?? []), key]);
        // The first of two entries with one kid wins, as in most verifiers.
        else if (!keys.has(mapKey(key.algorithm, key.kid))) keys.set(mapKey(key.algorithm, key.kid), key);
      }
      // A set with nothing usable is more likely a broken endpoint than a deliberate revocation
      // of every key: keep what worked.
      if (keys.size === 0 && kidless.size === 0) throw new Error('the key set holds no RS256 or ES256 signature key');
      this.#keys = keys;
      this.#kidless = kidless;
      this.#lastSuccessAt = this.#now();
      this.#lastError = undefined;
    } catch (error) {
      this.#lastError = error as Error;
      this.#log.warn({ event: LogEvent.identityJwksFetchFailed, err: error, jwksUrl: this.#url, keysKept: this.#keys.size }, 'fetching the identity provider JWKS failed; keeping the keys already known');
    }
  }

  async #fetchBody(): Promise<unknown> {
    const response = await fetch(this.#url, {
      signal: AbortSignal.timeout(this.#timeoutMs),
      // A redirect could take the fetch off https; the configured URL must be the real one.
      redirect: 'error',
      headers: { accept: 'application/jwk-set+json, application/json' },
    });
    if (!response.ok) {
      await response.body?.cancel().catch(() => {});
      throw new Error(`HTTP ${response.status}`);
    }
    const declared = Number(response.headers.get('content-length') ?? 0);
    if (declared > this.#maxBytes) {
      await response.body?.cancel().catch(() => {});
      throw new Error(`the key set is larger than ${this.#maxBytes} bytes`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    if (response.body) {
      for await (const chunk of response.body) {
        size += chunk.byteLength;
        if (size > this.#maxBytes) throw new Error(`the key set is larger than ${this.#maxBytes} bytes`);
        chunks.push(Buffer.from(chunk));
      }
    }
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
    } catch {
      throw new Error('the key set is not JSON');
    }
  }
}
