import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { PeriodicTimer } from '../lifecycle/periodic-timer.js';
import { NOW_MS, RELEASE_LOCK, RENEW_LOCK } from '../redis/lua-snippets.js';

/**
 * Heartbeats live in Redis only. Per tunnel:
 *   hb:<tunnelId>  -> owner id, with a TTL of TUNNEL_TTL_SECONDS (the heartbeat proper)
 * and one sorted set of deadlines next to them:
 *   deadlines      -> member tunnelId, score = epoch ms after which the reaper should act
 *
 * The TTL key answers "is this tunnel alive and whose is it" in O(1) without
 * PostgreSQL; the sorted set lets the reaper find what is due in O(log N + due)
 * however many healthy tunnels there are. Both are updated together by Lua
 * scripts, using Redis's own clock so that brokers with skewed clocks agree.
 *
 * A deadline in the set also serves as a lease: claiming a due tunnel pushes its
 * deadline forward instead of removing it, so if the claiming process dies the
 * tunnel comes due again and another reaper finishes the job.
 *
 * Redis may come back empty (a restart without persistence, a failover, a flush).
 * The `epoch` key marks a key space whose state is complete: it is written last by
 * a rebuild from PostgreSQL. While it is missing, heartbeats answer "retry" rather
 * than "not found", and nothing is claimed for reaping, so no heartbeating tunnel
 * is reaped because Redis forgot it.
 */


// KEYS: hb key, deadlines, epoch, rate key. ARGV: tunnelId, ownerId, ttlMs, max per window, windowMs.
// Returns the new deadline; -1 unknown/lapsed/not the owner's; -2 the key space was lost;
// {ms until the window ends} when the tunnel sent more than its share of heartbeats. The
// bound lives here, in the heartbeat's one round trip, rather than in a second call.
const TOUCH = `
local owner = redis.call('GET', KEYS[1])
if owner ~= ARGV[2] then
  if redis.call('EXISTS', KEYS[3]) == 0 then return -2 end
  return -1
end
local sent = redis.call('INCR', KEYS[4])
if sent == 1 then redis.call('PEXPIRE', KEYS[4], ARGV[5]) end
if sent > tonumber(ARGV[4]) then return {redis.call('PTTL', KEYS[4])} end
${NOW_MS}
local deadline = now + tonumber(ARGV[3])
redis.call('SET', KEYS[1], owner, 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], deadline, ARGV[1])
return deadline
`;

// KEYS: hb key, deadlines. ARGV: tunnelId, ownerId, ttlMs. Returns the deadline.
const START = `${NOW_MS}
local deadline = now + tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], deadline, ARGV[1])
return deadline
`;

// KEYS: hb key, deadlines. ARGV: tunnelId, delayMs. Stops heartbeats and (re)schedules the reaper.
const SCHEDULE_END = `${NOW_MS}
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return now + tonumber(ARGV[2])
`;

// KEYS: deadlines, epoch. ARGV: limit, leaseMs, hb key prefix (with the client's keyPrefix).
// Returns {id, ms past its deadline, ...} for tunnels whose deadline passed; each is leased to
// the caller (its deadline pushed forward by leaseMs, which the caller renews while it works)
// and its heartbeat key removed, so a heartbeat arriving after the deadline is refused rather
// than racing the reaper. The lateness comes from the same clock as the deadline (Redis's).
// Returns nil (claims nothing) while the key space is lost.
const CLAIM_DUE = `
if redis.call('EXISTS', KEYS[2]) == 0 then return nil end
${NOW_MS}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local lease = now + tonumber(ARGV[2])
local out = {}
for i = 1, #due, 2 do
  local id = due[i]
  redis.call('ZADD', KEYS[1], lease, id)
  redis.call('DEL', ARGV[3] .. id)
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

// KEYS: hb key, deadlines. ARGV: tunnelId.
const FORGET = `
redis.call('DEL', KEYS[1])
return redis.call('ZREM', KEYS[2], ARGV[1])
`;

// KEYS: deadlines. ARGV: ttlMs, pendingDelayMs, hb key prefix, then (id, owner-or-empty) pairs.
// A tunnel with an owner is live: a full TTL from now. One without is creating or ending:
// due after pendingDelayMs unless it already has a deadline.
const RESTORE = `${NOW_MS}
local ttl = tonumber(ARGV[1])
for i = 4, #ARGV, 2 do
  local id, owner = ARGV[i], ARGV[i + 1]
  if owner ~= '' then
    redis.call('SET', ARGV[3] .. id, owner, 'PX', ttl)
    redis.call('ZADD', KEYS[1], 'GT', now + ttl, id)
  else
    redis.call('ZADD', KEYS[1], 'NX', now + tonumber(ARGV[2]), id)
  end
end
return (#ARGV - 3) / 2
`;


// KEYS: rebuild lock, epoch. ARGV: token, epoch value. Marks the key space complete only while
// the rebuild's lock is still the caller's. 1 if written.
const SET_EPOCH_IF_LOCKED = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
`;

interface HeartbeatCommands {
  tbTouch(hbKey: string, deadlines: string, epoch: string, rateKey: string, id: string, owner: string, ttlMs: number, maxPerWindow: number, windowMs: number): Promise<number | [number]>;
  tbStart(hbKey: string, deadlines: string, id: string, owner: string, ttlMs: number): Promise<number>;
  tbScheduleEnd(hbKey: string, deadlines: string, id: string, delayMs: number): Promise<number>;
  tbClaimDue(deadlines: string, epoch: string, limit: number, leaseMs: number, hbPrefix: string): Promise<Array<string | number> | null>;
  tbExtendClaims(deadlines: string, leaseMs: number, ...ids: string[]): Promise<number>;
  tbForget(hbKey: string, deadlines: string, id: string): Promise<number>;
  tbRestore(deadlines: string, ttlMs: number, pendingDelayMs: number, hbPrefix: string, ...pairs: string[]): Promise<number>;
  tbReleaseLock(lock: string, token: string): Promise<number>;
  tbRenewLock(lock: string, token: string, leaseMs: number): Promise<number>;
  tbSetEpochIfLocked(lock: string, epoch: string, token: string, value: string): Promise<number>;
}

const HB_PREFIX = 'hb:';
const RATE_PREFIX = 'hbr:';
/** The window of the per-tunnel heartbeat bound. */
const RATE_WINDOW_MS = 60_000;
const DEADLINES_KEY = 'deadlines';
const EPOCH_KEY = 'epoch';
const REBUILD_LOCK_KEY = 'epoch:rebuild-lock';
const DEFAULT_REBUILD_LOCK_MS = 5_000;

/** The key space is missing its epoch: Redis lost its state and has not been rebuilt yet. */
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
  readonly #redis: Redis & HeartbeatCommands;
  readonly #ttlMs: number;
  readonly #maxPerWindow: number;
  readonly #rebuildLockMs: number;

  /**
   * `maxPerMinute`: heartbeats one tunnel may send per minute (default: unbounded in practice).
   * `rebuildLockMs`: the lease of the rebuild lock, renewed while a rebuild runs.
   */
  constructor(redis: Redis, options: { ttlSeconds: number; maxPerMinute?: number; rebuildLockMs?: number }) {
    const commands = redis as Redis & Partial<HeartbeatCommands>;
    if (!commands.tbTouch) {
      redis.defineCommand('tbTouch', { numberOfKeys: 4, lua: TOUCH });
      redis.defineCommand('tbStart', { numberOfKeys: 2, lua: START });
      redis.defineCommand('tbScheduleEnd', { numberOfKeys: 2, lua: SCHEDULE_END });
      redis.defineCommand('tbClaimDue', { numberOfKeys: 2, lua: CLAIM_DUE });
      redis.defineCommand('tbExtendClaims', { numberOfKeys: 1, lua: EXTEND_CLAIMS });
      redis.defineCommand('tbForget', { numberOfKeys: 2, lua: FORGET });
      redis.defineCommand('tbRestore', { numberOfKeys: 1, lua: RESTORE });
      redis.defineCommand('tbReleaseLock', { numberOfKeys: 1, lua: RELEASE_LOCK });
      redis.defineCommand('tbRenewLock', { numberOfKeys: 1, lua: RENEW_LOCK });
      redis.defineCommand('tbSetEpochIfLocked', { numberOfKeys: 2, lua: SET_EPOCH_IF_LOCKED });
    }
    this.#redis = redis as Redis & HeartbeatCommands;
    this.#ttlMs = options.ttlSeconds * 1000;
    this.#maxPerWindow = options.maxPerMinute ?? Number.MAX_SAFE_INTEGER;
    this.#rebuildLockMs = options.rebuildLockMs ?? DEFAULT_REBUILD_LOCK_MS;
  }

  get ttlMs(): number {
    return this.#ttlMs;
  }

  /** Creation counts as the first heartbeat. Returns the expiry (epoch ms). */
  start(tunnelId: string, ownerId: string): Promise<number> {
    return this.#redis.tbStart(HB_PREFIX + tunnelId, DEADLINES_KEY, tunnelId, ownerId, this.#ttlMs);
  }

  /**
   * The hot path: one Redis round trip. Returns the new expiry (epoch ms), or null when the
   * tunnel is unknown, lapsed, ended or belongs to someone else (indistinguishable by design).
   * Throws HeartbeatStateLostError while Redis's state awaits a rebuild, and
   * HeartbeatRateExceededError past the tunnel's bound.
   */
  async touch(tunnelId: string, ownerId: string): Promise<number | null> {
    const deadline = await this.#redis.tbTouch(HB_PREFIX + tunnelId, DEADLINES_KEY, EPOCH_KEY, RATE_PREFIX + tunnelId, tunnelId, ownerId, this.#ttlMs, this.#maxPerWindow, RATE_WINDOW_MS);
    if (Array.isArray(deadline)) throw new HeartbeatRateExceededError(Math.max(0, Number(deadline[0])));
    if (deadline === -2) throw new HeartbeatStateLostError();
    return deadline < 0 ? null : deadline;
  }

  /** Refuses further heartbeats and makes the tunnel due for the reaper after `delayMs`. */
  scheduleEnd(tunnelId: string, delayMs: number): Promise<number> {
    return this.#redis.tbScheduleEnd(HB_PREFIX + tunnelId, DEADLINES_KEY, tunnelId, Math.max(0, Math.round(delayMs)));
  }

  /** Leases up to `limit` due tunnels to the caller for `leaseMs`. Throws while the state awaits a rebuild. */
  async claimDue(limit: number, leaseMs: number): Promise<DueClaim[]> {
    const due = await this.#redis.tbClaimDue(DEADLINES_KEY, EPOCH_KEY, limit, Math.round(leaseMs), this.#hbPrefix());
    if (due === null) throw new HeartbeatStateLostError();
    const claims: DueClaim[] = [];
    for (let i = 0; i + 1 < due.length; i += 2) claims.push({ id: String(due[i]), msPastDeadline: Number(due[i + 1]) });
    return claims;
  }

  /** Renews the caller's claims on tunnels it has not handled yet (see claimDue). */
  async extendClaims(tunnelIds: string[], leaseMs: number): Promise<void> {
    if (tunnelIds.length === 0) return;
    await this.#redis.tbExtendClaims(DEADLINES_KEY, Math.round(leaseMs), ...tunnelIds);
  }

  /** The tunnel is ended: nothing left to track. */
  async forget(tunnelId: string): Promise<void> {
    await this.#redis.tbForget(HB_PREFIX + tunnelId, DEADLINES_KEY, tunnelId);
  }

  /** Current deadlines (epoch ms) for these tunnels, null where none is tracked. */
  async deadlines(tunnelIds: string[]): Promise<Array<number | null>> {
    if (tunnelIds.length === 0) return [];
    const scores = await this.#redis.zmscore(DEADLINES_KEY, ...tunnelIds);
    return scores.map((s) => (s === null ? null : Number(s)));
  }

  async hasEpoch(): Promise<boolean> {
    return (await this.#redis.exists(EPOCH_KEY)) === 1;
  }

  /**
   * Rebuilds the key space from PostgreSQL if (and only if) its epoch is missing.
   * Every live tunnel gets a full TTL from now, so none is reaped for at least one TTL
   * after the loss is noticed; tunnels that were creating or ending become due after
   * `pendingDelayMs` so the reaper completes or rolls them back.
   *
   * One process rebuilds at a time (a Redis lock); the others answer 'busy'.
   * `load` pages through the rows; it is called only when a rebuild actually runs.
   */
  async rebuildIfLost(load: () => AsyncIterable<RestoreEntry[]>, pendingDelayMs: number): Promise<'intact' | 'rebuilt' | 'busy'> {
    if (await this.hasEpoch()) return 'intact';
    const token = randomUUID();
    // A short lock, renewed while the rebuild runs: a rebuilder that dies holds up the others
    // for one lock lease, not for the longest rebuild imaginable.
    const locked = await this.#redis.set(REBUILD_LOCK_KEY, token, 'PX', this.#rebuildLockMs, 'NX');
    if (locked !== 'OK') return 'busy';
    const keepalive = new PeriodicTimer({
      intervalMs: Math.max(1, Math.floor(this.#rebuildLockMs / 3)),
      tick: () => this.#redis.tbRenewLock(REBUILD_LOCK_KEY, token, this.#rebuildLockMs),
      onError: () => {},
    });
    keepalive.start();
    try {
      if (await this.hasEpoch()) return 'intact';
      for await (const batch of load()) {
        if (batch.length === 0) continue;
        await this.#redis.tbRestore(DEADLINES_KEY, this.#ttlMs, Math.round(pendingDelayMs), this.#hbPrefix(), ...batch.flatMap((e) => [e.id, e.ownerId ?? '']));
      }
      // Written last, and only while the lock is still ours: a flush (or a lost lock) during
      // the rebuild took part of what was restored with it, so it must not be trusted.
      const marked = await this.#redis.tbSetEpochIfLocked(REBUILD_LOCK_KEY, EPOCH_KEY, token, `${Date.now()}:${token}`);
      return marked === 1 ? 'rebuilt' : 'busy';
    } finally {
      keepalive.stop();
      await keepalive.settled();
      await this.#redis.tbReleaseLock(REBUILD_LOCK_KEY, token).catch(() => {});
    }
  }

  #hbPrefix(): string {
    return `${this.#redis.options.keyPrefix ?? ''}${HB_PREFIX}`;
  }
}
