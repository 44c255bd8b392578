import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes, randomUUID } from 'node:crypto';
import type { RedisClient as Redis } from '../redis/redis-client.js';
import { AppError } from '../errors/catalogue.js';
import { errorBody, toAppError } from '../errors/error-handler.js';
import { PeriodicTimer } from '../lifecycle/periodic-timer.js';
import { LogEvent, type Logger } from '../logging/logger.js';
import { RELEASE_LOCK, RENEW_LOCK } from '../redis/lua-snippets.js';
import type { CreateTunnelInput } from './tunnel-service.js';

/**
 * Idempotency-Key for POST /v1/tunnels, kept in Redis (relative to the client's keyPrefix):
 *
 *   idem:<sha256 of [userId, key]>  ->  a pending marker, then the stored response
 *
 * Hashing the user id together with the key scopes keys per user (one user can neither
 * collide with nor read another's) and keeps arbitrary key characters out of Redis key names.
 *
 * 1. Claim: one Lua call sets a pending marker unless the key exists. The marker holds an
 *    HMAC of the canonical request and a random claim id, and expires after `pendingTtlMs`
 *    (a short lease, renewed every third of it while the create runs), so a broker that
 *    dies mid-create frees the key soon after.
 * 2. Outcome: a response that retrying would only repeat (201, and 4xx other than 401, 408,
 *    409 and 429, see `isReplayable`) replaces the marker for `ttlSeconds`; anything else
 *    (5xx, a rate limit, a slug held by another tunnel) deletes it, so the client's retry
 *    runs the create again. A failed create has been rolled back, so running again is safe.
 *    Both steps are conditional on the marker still being ours.
 *
 * The stored response contains the cloudflared token, so it is encrypted (AES-256-GCM, key
 * from JWT_SECRET via HKDF, authenticated together with the Redis key name so a record
 * cannot be replayed under another user's key). The request fingerprint is an HMAC for the
 * same reason: nothing about the request is readable in Redis.
 */

/** 1-255 printable ASCII characters (space to tilde). */
export const IDEMPOTENCY_KEY_PATTERN = '^[\\x20-\\x7E]{1,255}$';
const IDEMPOTENCY_KEY_RE = /^[\x20-\x7E]{1,255}$/;
/** Set on a response that is a replay of an earlier one. */
export const REPLAYED_HEADER = 'idempotent-replayed';
/** A create normally takes a second or two, so a duplicate that arrives meanwhile retries soon. */
export const IN_PROGRESS_RETRY_AFTER_SEC = 1;

const KEY_NAMESPACE = 'idem:';
const RECORD_VERSION = 1;
const HKDF_SALT = 'tunnel-broker idempotency';
// Changing either label (or the record layout) must come with a new RECORD_VERSION.
const ENCRYPTION_INFO = 'idempotency/v1/response-encryption';
const FINGERPRINT_INFO = 'idempotency/v1/request-fingerprint';

// KEYS: the key. ARGV: pending marker, its TTL (ms). Returns the existing value, or nil once claimed.
const CLAIM = `
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
`;

// KEYS: the key. ARGV: our pending marker, the stored record, its TTL (s). 1 if stored.
const COMPLETE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
`;

interface IdempotencyCommands {
  tbIdemClaim(key: string, pending: string, ttlMs: number): Promise<string | null>;
  tbIdemComplete(key: string, pending: string, record: string, ttlSeconds: number): Promise<number>;
  tbIdemRelease(key: string, pending: string): Promise<number>;
  tbIdemRenew(key: string, pending: string, ttlMs: number): Promise<number>;
}

/** What is replayed: the status and the JSON body (the route's serializer makes the bytes identical). */
export interface StoredResponse {
  statusCode: number;
  body: unknown;
}

export interface IdempotencyScope {
  userId: string;
  key: string;
}

export type ClaimResult =
  | { kind: 'claimed'; marker: string }
  | { kind: 'replay'; response: StoredResponse }
  | { kind: 'mismatch' }
  | { kind: 'in_progress' }
  /** A stored record that cannot be decrypted (JWT_SECRET changed) or parsed. */
  | { kind: 'unreadable' };

interface PendingRecord {
  v: number;
  state: 'pending';
  fp: string;
  claim: string;
}

interface DoneRecord {
  v: number;
  state: 'done';
  fp: string;
  iv: string;
  tag: string;
  data: string;
}

export interface IdempotencyStoreOptions {
  /** JWT_SECRET: the keys for encryption and fingerprints are derived from it. */
  secret: string;
  /** How long a stored response replays. */
  ttlSeconds: number;
  /** How long a claim lasts without renewal (its owner died); renewed every third of it while the request runs. */
  pendingTtlMs: number;
}

export function isValidIdempotencyKey(value: unknown): value is string {
  return typeof value === 'string' && IDEMPOTENCY_KEY_RE.test(value);
}

/** The Redis key (relative to the client's keyPrefix) of one user's idempotency key. */
export function idempotencyRedisKey(scope: IdempotencyScope): string {
  return KEY_NAMESPACE + createHash('sha256').update(JSON.stringify([scope.userId, scope.key])).digest('hex');
}

/**
 * The create request as the service will understand it: the port, and the requested slug
 * lower-cased (as the service does), or null. Key order, whitespace and unknown fields are
 * not part of it, so they do not make a retry "a different request".
 */
export function canonicalCreateRequest(input: CreateTunnelInput): string {
  const base = ['create-tunnel', String(input.port), input.requestedSlug?.toLowerCase() ?? null];
  // Without `access`, exactly the canonical form from before Access, so stored keys still match.
  if (input.access === undefined) return JSON.stringify(base);
  return JSON.stringify([...base, input.access.mode, [...(input.access.emails ?? [])].map((e) => e.trim().toLowerCase()).sort()]);
}

/**
 * Whether retrying would get the same answer, so the first one may be replayed: a success,
 * or a client error that depends on the request alone. 401 (tokens expire and renew),
 * 408, 409 (a slug held by a tunnel that may end) and 429 (limits recover) depend on the
 * moment, and 5xx are transient by definition: those are not stored.
 */
export function isReplayable(statusCode: number): boolean {
  if (statusCode >= 200 && statusCode < 300) return true;
  return statusCode >= 400 && statusCode < 500 && ![401, 408, 409, 429].includes(statusCode);
}

export class IdempotencyStore {
  readonly #redis: Redis & IdempotencyCommands;
  readonly #encryptionKey: Buffer;
  readonly #fingerprintKey: Buffer;
  readonly ttlSeconds: number;
  readonly pendingTtlMs: number;

  constructor(redis: Redis, options: IdempotencyStoreOptions) {
    const commands = redis as Redis & Partial<IdempotencyCommands>;
    if (!commands.tbIdemClaim) {
      redis.defineCommand('tbIdemClaim', { numberOfKeys: 1, lua: CLAIM });
      redis.defineCommand('tbIdemComplete', { numberOfKeys: 1, lua: COMPLETE });
      redis.defineCommand('tbIdemRelease', { numberOfKeys: 1, lua: RELEASE_LOCK });
      redis.defineCommand('tbIdemRenew', { numberOfKeys: 1, lua: RENEW_LOCK });
    }
    this.#redis = redis as Redis & IdempotencyCommands;
    this.#encryptionKey = Buffer.from(hkdfSync('sha256', options.secret, HKDF_SALT, ENCRYPTION_INFO, 32));
    this.#fingerprintKey = Buffer.from(hkdfSync('sha256', options.secret, HKDF_SALT, FINGERPRINT_INFO, 32));
    this.ttlSeconds = options.ttlSeconds;
    this.pendingTtlMs = Math.ceil(options.pendingTtlMs);
  }

  /** HMAC of a canonical request: equal requests compare equal; Redis learns nothing about them. */
  fingerprint(canonicalRequest: string): string {
    return createHmac('sha256', this.#fingerprintKey).update(canonicalRequest).digest('base64url');
  }

  /** Atomically claims the key for this request, or says what the key already holds. */
  async claim(scope: IdempotencyScope, fingerprint: string): Promise<ClaimResult> {
    const redisKey = idempotencyRedisKey(scope);
    const pending: PendingRecord = { v: RECORD_VERSION, state: 'pending', fp: fingerprint, claim: randomUUID() };
    const marker = JSON.stringify(pending);
    const existing = await this.#redis.tbIdemClaim(redisKey, marker, this.pendingTtlMs);
    if (existing === null) return { kind: 'claimed', marker };

    const record = parseRecord(existing);
    if (!record) return { kind: 'unreadable' };
    // A different request under the same key is the client's bug whatever state the key is in.
    if (record.fp !== fingerprint) return { kind: 'mismatch' };
    if (record.state === 'pending') return { kind: 'in_progress' };
    const response = this.#decrypt(record, redisKey);
    return response ? { kind: 'replay', response } : { kind: 'unreadable' };
  }

  /** Stores the outcome for `ttlSeconds`, if the claim is still ours. */
  async complete(scope: IdempotencyScope, marker: string, response: StoredResponse): Promise<boolean> {
    const redisKey = idempotencyRedisKey(scope);
    const { fp } = JSON.parse(marker) as PendingRecord;
    const record = JSON.stringify(this.#encrypt(fp, response, redisKey));
    return (await this.#redis.tbIdemComplete(redisKey, marker, record, this.ttlSeconds)) === 1;
  }

  /** Keeps the claim alive while the request runs; false once it is no longer ours. */
  async renew(scope: IdempotencyScope, marker: string): Promise<boolean> {
    return (await this.#redis.tbIdemRenew(idempotencyRedisKey(scope), marker, this.pendingTtlMs)) === 1;
  }

  /** Forgets the claim (if still ours) so that a retry runs the request again. */
  async release(scope: IdempotencyScope, marker: string): Promise<boolean> {
    return (await this.#redis.tbIdemRelease(idempotencyRedisKey(scope), marker)) === 1;
  }

  #encrypt(fp: string, response: StoredResponse, redisKey: string): DoneRecord {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.#encryptionKey, iv);
    cipher.setAAD(Buffer.from(redisKey, 'utf8'));
    const data = Buffer.concat([cipher.update(JSON.stringify(response), 'utf8'), cipher.final()]);
    return {
      v: RECORD_VERSION,
      state: 'done',
      fp,
      iv: iv.toString('base64'),
      tag: cipher.getAuthTag().toString('base64'),
      data: data.toString('base64'),
    };
  }

  #decrypt(record: DoneRecord, redisKey: string): StoredResponse | undefined {
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#encryptionKey, Buffer.from(record.iv, 'base64'));
      decipher.setAAD(Buffer.from(redisKey, 'utf8'));
      decipher.setAuthTag(Buffer.from(record.tag, 'base64'));
      const plain = Buffer.concat([decipher.update(Buffer.from(record.data, 'base64')), decipher.final()]).toString('utf8');
      const response = JSON.parse(plain) as Partial<StoredResponse>;
      if (typeof response.statusCode !== 'number' || !('body' in response)) return undefined;
      return { statusCode: response.statusCode, body: response.body };
    } catch {
      return undefined;
    }
  }
}

function parseRecord(text: string): PendingRecord | DoneRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const record = value as Record<string, unknown>;
  if (record.v !== RECORD_VERSION || typeof record.fp !== 'string') return undefined;
  if (record.state === 'pending' && typeof record.claim === 'string') return record as unknown as PendingRecord;
  if (record.state === 'done' && typeof record.iv === 'string' && typeof record.tag === 'string' && typeof record.data === 'string') {
    return record as unknown as DoneRecord;
  }
  return undefined;
}

export interface IdempotentRun {
  store: IdempotencyStore;
  scope: IdempotencyScope;
  /** The canonical form of the request (see canonicalCreateRequest). */
  canonicalRequest: string;
  log: Logger;
}

/**
 * Runs `execute` at most once per user and key (while the outcome is kept), replaying a
 * stored outcome instead. A failure that is not stored is rethrown as it was, after
 * releasing the key; a stored failure is rethrown too (the error handler answers it now,
 * and later requests replay the same envelope).
 */
export async function runIdempotent(run: IdempotentRun, execute: () => Promise<StoredResponse>): Promise<StoredResponse & { replayed: boolean }> {
  const { store, scope, log } = run;
  // The route schema checks the header; this guards callers that bypass it.
  if (!isValidIdempotencyKey(scope.key)) {
    throw new AppError('INVALID_INPUT', { message: 'Idempotency-Key must be 1-255 printable ASCII characters.', details: { field: 'Idempotency-Key' } });
  }
  const claim = await store.claim(scope, store.fingerprint(run.canonicalRequest));
  switch (claim.kind) {
    case 'replay':
      log.info({ event: LogEvent.idempotencyReplayed, statusCode: claim.response.statusCode }, 'replaying the stored response of an Idempotency-Key');
      return { ...claim.response, replayed: true };
    case 'mismatch':
      throw new AppError('IDEMPOTENCY_KEY_REUSED');
    case 'in_progress':
      throw new AppError('IDEMPOTENCY_KEY_IN_USE', { retryAfterSec: IN_PROGRESS_RETRY_AFTER_SEC });
    case 'unreadable':
      log.warn({ event: LogEvent.idempotencyUnreadable }, 'a stored Idempotency-Key record cannot be read (was JWT_SECRET changed?)');
      throw new AppError('IDEMPOTENCY_KEY_REUSED', { message: 'This Idempotency-Key was already used and its response can no longer be replayed; use a new key.' });
    case 'claimed':
      break;
  }

  let response: StoredResponse;
  const keepalive = new PeriodicTimer({
    intervalMs: Math.max(1, Math.floor(store.pendingTtlMs / 3)),
    tick: () => store.renew(scope, claim.marker),
    onError: (error) => log.warn({ err: error, event: LogEvent.idempotencyStoreFailed }, 'could not renew an Idempotency-Key claim; retrying'),
  });
  keepalive.start();
  try {
    response = await execute();
  } catch (error) {
    keepalive.stop();
    await keepalive.settled();
    const appError = toAppError(error);
    if (isReplayable(appError.statusCode)) {
      await settle(() => store.complete(scope, claim.marker, { statusCode: appError.statusCode, body: errorBody(appError) }), log);
    } else {
      await settle(() => store.release(scope, claim.marker), log);
    }
    throw error;
  }
  keepalive.stop();
  await keepalive.settled();
  if (isReplayable(response.statusCode)) {
    await settle(() => store.complete(scope, claim.marker, response), log);
  } else {
    await settle(() => store.release(scope, claim.marker), log);
  }
  return { ...response, replayed: false };
}

/**
 * Recording the outcome must not turn a created tunnel into an error response: if Redis
 * fails here the claim simply expires after pendingTtlMs. The log line carries the error
 * only (never the response, which holds the token).
 */
async function settle(step: () => Promise<boolean>, log: Logger): Promise<void> {
  try {
    const owned = await step();
    if (!owned) log.warn({ event: LogEvent.idempotencyClaimLost }, 'the Idempotency-Key claim expired before the request finished');
  } catch (error) {
    log.warn({ err: error, event: LogEvent.idempotencyStoreFailed }, 'could not record the outcome of an Idempotency-Key');
  }
}
