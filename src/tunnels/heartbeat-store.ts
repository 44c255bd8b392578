import { randomUUID } from 'node:crypto';
import type { RedisClient } from '../redis/redis-client.js';
import { PeriodicTimer } from '../lifecycle/periodic-timer.js';
import { NOW_MS, RELEASE_LOCK, RENEW_LOCK } from '../redis/lua-snippets.js';
import { HEARTBEAT_BUCKET_KEYS, HEARTBEAT_BUCKETS, heartbeatBucket, heartbeatKeysOf, type HeartbeatBucketKeys } from './heartbeat-keys.js';

/**
 * Heartbeats live in Redis only, spread over buckets (src/tunnels/heartbeat-keys.ts). Per bucket:
 *   hb:{hbN}         hash: tunnelId -> owner id, while heartbeats are accepted
 *   deadlines:{hbN}  sorted set: tunnelId -> epoch ms after which the reaper should act
 *
 * A tunnel is alive while its owner is in the hash and its deadline is in the future: one
 * O(1) lookup without PostgreSQL. The sorted set lets the reaper find what is due in
 * O(log N + due) however many healthy tunnels there are. Both are updated together by Lua
 * scripts, using Redis's own clock so that brokers with skewed clocks agree. Every script
 * declares all its keys, and they all share the bucket's hash tag (one Cluster slot).
 *
 * A deadline in the set also serves as a lease: claiming a due tunnel pushes its
 * deadline forward instead of removing it, so if the claiming process dies the
 * tunnel comes due again and another reaper finishes the job.
 *
 * Redis may come back empty (a restart without persistence, a failover, a flush, one
 * cluster node losing its data). A bucket's `epoch` key marks its state complete: it is
 * written last by a rebuild from PostgreSQL. While it is missing, heartbeats of that bucket
 * answer "retry" rather than "not found", and nothing in it is claimed for reaping, so no
 * heartbeating tunnel is reaped because Redis forgot it.
 */


// KEYS: owners, deadlines, epoch, rate key. ARGV: tunnelId, ownerId, ttlMs, max per window, windowMs.
// Returns the new deadline; -1 unknown/lapsed/not the owner's; -2 the bucket's state was lost;
// {ms until the window ends} when the tunnel sent more than its share of heartbeats. The
// bound lives here, in the heartbeat's one round trip, rather than in a second call.
const TOUCH = `
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner ~= ARGV[2] then
  if redis.call('EXISTS', KEYS[3]) == 0 then return -2 end
  return -1
end
${NOW_MS}
local current = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not current or tonumber(current) <= now then return -1 end
local sent = redis.call('INCR', KEYS[4])
if sent == 1 then redis.call('PEXPIRE', KEYS[4], ARGV[5]) end
if sent > tonumber(ARGV[4]) then return {redis.call('PTTL', KEYS[4])} end
local deadline = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[2], deadline, ARGV[1])
return deadline
`;

// KEYS: owners, deadlines. ARGV: tunnelId, ownerId, ttlMs. Returns the deadline.
const START = `${NOW_MS}
local deadline = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], deadline, ARGV[1])
return deadline
`;

// KEYS: owners, deadlines. ARGV: tunnelId, delayMs. Stops heartbeats and (re)schedules the reaper.
const SCHEDULE_END = `${NOW_MS}
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return now + tonumber(ARGV[2])
`;

// KEYS: deadlines, epoch, owners. ARGV: limit, leaseMs.
// Returns {id, ms past its deadline, ...} for tunnels whose deadline passed; each is leased to
// the caller (its deadline pushed forward by leaseMs, which the caller renews while it works)
// and its owner removed, so a heartbeat arriving after the deadline is refused rather
// than racing the reaper. The lateness comes from the same clock as the deadline (Redis's).
// Returns nil (claims nothing) while the bucket's state is lost.
const CLAIM_DUE = `
if redis.call('EXISTS', KEYS[2]) == 0 then return nil end
${NOW_MS}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local lease = now + tonumber(ARGV[2])
local out = {}
for i = 1, #due, 2 do
  local id = due[i]
  redis.call('ZADD', KEYS[1], lease, id)
  redis.call('HDEL', KEYS[3], id)
  out[#out + 1] = id
  out[#out + 1] = now - tonumber(due[i + 1])
end
return out
`;

// KEYS: deadlines. ARGV: leaseMs, then ids. A reaper still working through a batch keeps its
// claims: each deadline that is still there is pushed to now + leaseMs (XX: an id already
// handled and forgotten is not brought back).
const EXTEND_CLAIMS = `${NOW_MS}
local lease = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', lease, ARGV[i])
end
return #ARGV - 1
`;

// KEYS: owners, deadlines. ARGV: tunnelId.
const FORGET = `
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('ZREM', KEYS[2], ARGV[1])
`;

// KEYS: owners, deadlines. ARGV: ttlMs, pendingDelayMs, then (id, owner-or-empty) pairs.
// A tunnel with an owner is live: a full TTL from now. One without is creating or ending:
// due after pendingDelayMs unless it already has a deadline.
const RESTORE = `${NOW_MS}
local ttl = tonumber(ARGV[1])
for i = 3, #ARGV, 2 do
  local id, owner = ARGV[i], ARGV[i + 1]
  if owner ~= '' then
    redis.call('HSET', KEYS[1], id, owner)
    redis.call('ZADD', KEYS[2], 'GT', now + ttl, id)
  else
    redis.call('ZADD', KEYS[2], 'NX', now + tonumber(ARGV[2]), id)
  end
end
return (#ARGV - 2) / 2
`;


// KEYS: rebuild lock, epoch (one bucket's). ARGV: token, epoch value. Marks the bucket complete
// only while the rebuild's lock is still the caller's. 1 if written.
const SET_EPOCH_IF_LOCKED = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
`;

interface HeartbeatCommands {
  tbTouch(owners: string, deadlines: string, epoch: string, rateKey: string, id: string, owner: string, ttlMs: number, maxPerWindow: number, windowMs: number): Promise<number | [number]>;
  tbStart(owners: string, deadlines: string, id: string, owner: string, ttlMs: number): Promise<number>;
  tbScheduleEnd(owners: string, deadlines: string, id: string, delayMs: number): Promise<number>;
  tbClaimDue(deadlines: string, epoch: string, owners: string, limit: number, leaseMs: number): Promise<Array<string | number> | null>;
  tbExtendClaims(deadlines: string, leaseMs: number, ...ids: string[]): Promise<number>;
  tbForget(owners: string, deadlines: string, id: string): Promise<number>;
  tbRestore(owners: string, deadlines: string, ttlMs: number, pendingDelayMs: number, ...pairs: string[]): Promise<number>;
  tbReleaseLock(lock: string, token: string): Promise<number>;
  tbRenewLock(lock: string, token: string, leaseMs: number): Promise<number>;
  tbSetEpochIfLocked(lock: string, epoch: string, token: string, value: string): Promise<number>;
}

/** The window of the per-tunnel heartbeat bound. */
const RATE_WINDOW_MS = 60_000;
const DEFAULT_REBUILD_LOCK_MS = 5_000;

/** A bucket is missing its epoch: Redis lost its state and has not been rebuilt yet. */
export class HeartbeatStateLostError extends Error {
  constructor() {
    super('Heartbeat state is being rebuilt after a Redis restart; retry shortly.');
    this.name = 'HeartbeatStateLostError';
  }
}

/** A due tunnel leased to the caller. */
export interface DueClaim {
  id: string;
  /** How long ago its deadline passed when it was claimed (Redis's clock). */
  msPastDeadline: number;
}

/** What one pass over the buckets claimed. */
export interface DueClaims {
  claims: DueClaim[];
  /** Buckets skipped because their state was lost (awaiting a rebuild). */
  lostBuckets: number;
}

/** The tunnel sent more heartbeats than its bound allows in the current window. */
export class HeartbeatRateExceededError extends Error {
  constructor(readonly retryAfterMs: number) {
    super('Too many heartbeats for this tunnel.');
    this.name = 'HeartbeatRateExceededError';
  }
}

/** One live or pending tunnel, as PostgreSQL knows it, for a rebuild. */
export interface RestoreEntry {
  id: string;
  /** Set for active tunnels (they get a fresh TTL); null for creating/ending ones. */
  ownerId: string | null;
}

export class HeartbeatStore {
  readonly #redis: RedisClient & HeartbeatCommands;
  readonly #ttlMs: number;
  readonly #maxPerWindow: number;
  readonly #rebuildLockMs: number;
  /** Where the next claimDue pass starts, so every bucket gets its turn at the front. */
  #nextBucket = 0;

  /**
   * `maxPerMinute`: heartbeats one tunnel may send per minute (default: unbounded in practice).
   * `rebuildLockMs`: the lease of a bucket's rebuild lock, renewed while a rebuild runs.
   */
  constructor(redis: RedisClient, options: { ttlSeconds: number; maxPerMinute?: number; rebuildLockMs?: number }) {
    const commands = redis as RedisClient & Partial<HeartbeatCommands>;
    if (!commands.tbTouch) {
      redis.defineCommand('tbTouch', { numberOfKeys: 4, lua: TOUCH });
      redis.defineCommand('tbStart', { numberOfKeys: 2, lua: START });
      redis.defineCommand('tbScheduleEnd', { numberOfKeys: 2, lua: SCHEDULE_END });
      redis.defineCommand('tbClaimDue', { numberOfKeys: 3, lua: CLAIM_DUE });
      redis.defineCommand('tbExtendClaims', { numberOfKeys: 1, lua: EXTEND_CLAIMS });
      redis.defineCommand('tbForget', { numberOfKeys: 2, lua: FORGET });
      redis.defineCommand('tbRestore', { numberOfKeys: 2, lua: RESTORE });
      redis.defineCommand('tbReleaseLock', { numberOfKeys: 1, lua: RELEASE_LOCK });
      redis.defineCommand('tbRenewLock', { numberOfKeys: 1, lua: RENEW_LOCK });
      redis.defineCommand('tbSetEpochIfLocked', { numberOfKeys: 2, lua: SET_EPOCH_IF_LOCKED });
    }
    this.#redis = redis as RedisClient & HeartbeatCommands;
    this.#ttlMs = options.ttlSeconds * 1000;
    this.#maxPerWindow = options.maxPerMinute ?? Number.MAX_SAFE_INTEGER;
    this.#rebuildLockMs = options.rebuildLockMs ?? DEFAULT_REBUILD_LOCK_MS;
  }

  /** Creation counts as the first heartbeat. Returns the expiry (epoch ms). */
  start(tunnelId: string, ownerId: string): Promise<number> {
    const k = heartbeatKeysOf(tunnelId);
    return this.#redis.tbStart(k.owners, k.deadlines, tunnelId, ownerId, this.#ttlMs);
  }

  /**
   * The hot path: one Redis round trip. Returns the new expiry (epoch ms), or null when the
   * tunnel is unknown, lapsed, ended or belongs to someone else (indistinguishable by design).
   * Throws HeartbeatStateLostError while its bucket's state awaits a rebuild, and
   * HeartbeatRateExceededError past the tunnel's bound.
   */
  async touch(tunnelId: string, ownerId: string): Promise<number | null> {
    const k = heartbeatKeysOf(tunnelId);
    const deadline = await this.#redis.tbTouch(k.owners, k.deadlines, k.epoch, k.rate(tunnelId), tunnelId, ownerId, this.#ttlMs, this.#maxPerWindow, RATE_WINDOW_MS);
    if (Array.isArray(deadline)) throw new HeartbeatRateExceededError(Math.max(0, Number(deadline[0])));
    if (deadline === -2) throw new HeartbeatStateLostError();
    return deadline < 0 ? null : deadline;
  }

  /** Refuses further heartbeats and makes the tunnel due for the reaper after `delayMs`. */
  scheduleEnd(tunnelId: string, delayMs: number): Promise<number> {
    const k = heartbeatKeysOf(tunnelId);
    return this.#redis.tbScheduleEnd(k.owners, k.deadlines, tunnelId, Math.max(0, Math.round(delayMs)));
  }

  /**
   * Leases up to `limit` due tunnels to the caller for `leaseMs`, walking the buckets one
   * script call each (starting at a different bucket every pass) until `limit` is reached.
   * Buckets whose state was lost claim nothing and are counted in `lostBuckets`.
   */
  async claimDue(limit: number, leaseMs: number): Promise<DueClaims> {
    const claims: DueClaim[] = [];
    let lostBuckets = 0;
    const first = this.#nextBucket;
    this.#nextBucket = (first + 1) % HEARTBEAT_BUCKETS;
    for (let i = 0; i < HEARTBEAT_BUCKETS && claims.length < limit; i++) {
      const k = HEARTBEAT_BUCKET_KEYS[(first + i) % HEARTBEAT_BUCKETS]!;
      const due = await this.#redis.tbClaimDue(k.deadlines, k.epoch, k.owners, limit - claims.length, Math.round(leaseMs));
      if (due === null) {
        lostBuckets++;
        continue;
      }
      for (let j = 0; j + 1 < due.length; j += 2) claims.push({ id: String(due[j]), msPastDeadline: Number(due[j + 1]) });
    }
    return { claims, lostBuckets };
  }

  /** Renews the caller's claims on tunnels it has not handled yet (see claimDue). */
  async extendClaims(tunnelIds: string[], leaseMs: number): Promise<void> {
    await Promise.all([...groupByBucket(tunnelIds)].map(([bucket, ids]) => this.#redis.tbExtendClaims(HEARTBEAT_BUCKET_KEYS[bucket]!.deadlines, Math.round(leaseMs), ...ids)));
  }

  /** The tunnel is ended: nothing left to track. */
  async forget(tunnelId: string): Promise<void> {
    const k = heartbeatKeysOf(tunnelId);
    await this.#redis.tbForget(k.owners, k.deadlines, tunnelId);
  }

  /** Current deadlines (epoch ms) for these tunnels, null where none is tracked. */
  async deadlines(tunnelIds: string[]): Promise<Array<number | null>> {
    const out = new Map<string, number | null>();
    await Promise.all(
      [...groupByBucket(tunnelIds)].map(async ([bucket, ids]) => {
        const scores = await this.#redis.zmscore(HEARTBEAT_BUCKET_KEYS[bucket]!.deadlines, ...ids);
        ids.forEach((id, i) => out.set(id, scores[i] === null || scores[i] === undefined ? null : Number(scores[i])));
      }),
    );
    return tunnelIds.map((id) => out.get(id) ?? null);
  }

  /** Whether every bucket's state is complete. */
  async hasEpoch(): Promise<boolean> {
    return (await this.#lostBuckets()).length === 0;
  }

  /**
   * Rebuilds, from PostgreSQL, the buckets whose epoch is missing (all of them after a
   * flush; those of one node when a cluster node lost its data). Every live tunnel in them
   * gets a full TTL from now, so none is reaped for at least one TTL after the loss is
   * noticed; tunnels that were creating or ending become due after `pendingDelayMs` so the
   * reaper completes or rolls them back.
   *
   * One process rebuilds a bucket at a time (a Redis lock per bucket); a bucket locked by
   * another process makes the answer 'busy'. `load` pages through the rows; it is called
   * only when a rebuild actually runs, once for all the buckets this call rebuilds.
   */
  async rebuildIfLost(load: () => AsyncIterable<RestoreEntry[]>, pendingDelayMs: number): Promise<'intact' | 'rebuilt' | 'busy'> {
    const lost = await this.#lostBuckets();
    if (lost.length === 0) return 'intact';
    const token = randomUUID();
    // Short locks, renewed while the rebuild runs: a rebuilder that dies holds up the others
    // for one lock lease, not for the longest rebuild imaginable.
    const locked: HeartbeatBucketKeys[] = [];
    await Promise.all(
      lost.map(async (k) => {
        if ((await this.#redis.set(k.rebuildLock, token, 'PX', this.#rebuildLockMs, 'NX')) === 'OK') locked.push(k);
      }),
    );
    if (locked.length === 0) return 'busy';
    const keepalive = new PeriodicTimer({
      intervalMs: Math.max(1, Math.floor(this.#rebuildLockMs / 3)),
      tick: () => Promise.all(locked.map((k) => this.#redis.tbRenewLock(k.rebuildLock, token, this.#rebuildLockMs))),
      onError: () => {},
    });
    keepalive.start();
    try {
      // Another process may have finished these buckets between our check and our lock.
      const stillLost = new Set((await this.#lostBuckets()).map((k) => k.bucket));
      const rebuilding = locked.filter((k) => stillLost.has(k.bucket));
      if (rebuilding.length > 0) {
        const mine = new Set(rebuilding.map((k) => k.bucket));
        for await (const batch of load()) {
          const byBucket = new Map<number, string[]>();
          for (const e of batch) {
            const bucket = heartbeatBucket(e.id);
            if (!mine.has(bucket)) continue;
            let pairs = byBucket.get(bucket);
            if (!pairs) byBucket.set(bucket, (pairs = []));
            pairs.push(e.id, e.ownerId ?? '');
          }
          await Promise.all([...byBucket].map(([bucket, pairs]) => {
            const k = HEARTBEAT_BUCKET_KEYS[bucket]!;
            return this.#redis.tbRestore(k.owners, k.deadlines, this.#ttlMs, Math.round(pendingDelayMs), ...pairs);
          }));
        }
      }
      // Written last, and only while the lock is still ours: a flush (or a lost lock) during
      // the rebuild took part of what was restored with it, so it must not be trusted.
      const marked = await Promise.all(rebuilding.map((k) => this.#redis.tbSetEpochIfLocked(k.rebuildLock, k.epoch, token, `${Date.now()}:${token}`)));
      const complete = marked.every((m) => m === 1) && locked.length === lost.length;
      return complete ? 'rebuilt' : 'busy';
    } finally {
      keepalive.stop();
      await keepalive.settled();
      await Promise.all(locked.map((k) => this.#redis.tbReleaseLock(k.rebuildLock, token).catch(() => {})));
    }
  }

  async #lostBuckets(): Promise<HeartbeatBucketKeys[]> {
    const exists = await Promise.all(HEARTBEAT_BUCKET_KEYS.map((k) => this.#redis.exists(k.epoch)));
    return HEARTBEAT_BUCKET_KEYS.filter((_, i) => exists[i] === 0);
  }
}

function groupByBucket(tunnelIds: readonly string[]): Map<number, string[]> {
  const groups = new Map<number, string[]>();
  for (const id of tunnelIds) {
    const bucket = heartbeatBucket(id);
    let ids = groups.get(bucket);
    if (!ids) groups.set(bucket, (ids = []));
    ids.push(id);
  }
  return groups;
}
