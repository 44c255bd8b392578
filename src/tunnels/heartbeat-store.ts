import type { Redis } from 'ioredis';

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
 */

const NOW_MS = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

// KEYS: hb key, deadlines. ARGV: tunnelId, ownerId, ttlMs. Returns the new deadline, or -1.
const TOUCH = `${NOW_MS}
local owner = redis.call('GET', KEYS[1])
if owner ~= ARGV[2] then return -1 end
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

// KEYS: deadlines. ARGV: limit, leaseMs, hb key prefix (with the client's keyPrefix).
// Returns ids whose deadline passed; each is leased to the caller and its heartbeat key removed,
// so a heartbeat arriving after the deadline is refused rather than racing the reaper.
const CLAIM_DUE = `${NOW_MS}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local lease = now + tonumber(ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], lease, id)
  redis.call('DEL', ARGV[3] .. id)
end
return due
`;

// KEYS: hb key, deadlines. ARGV: tunnelId.
const FORGET = `
redis.call('DEL', KEYS[1])
return redis.call('ZREM', KEYS[2], ARGV[1])
`;

interface HeartbeatCommands {
  tbTouch(hbKey: string, deadlines: string, id: string, owner: string, ttlMs: number): Promise<number>;
  tbStart(hbKey: string, deadlines: string, id: string, owner: string, ttlMs: number): Promise<number>;
  tbScheduleEnd(hbKey: string, deadlines: string, id: string, delayMs: number): Promise<number>;
  tbClaimDue(deadlines: string, limit: number, leaseMs: number, hbPrefix: string): Promise<string[]>;
  tbForget(hbKey: string, deadlines: string, id: string): Promise<number>;
}

const HB_PREFIX = 'hb:';
const DEADLINES_KEY = 'deadlines';

export class HeartbeatStore {
  readonly #redis: Redis & HeartbeatCommands;
  readonly #ttlMs: number;

  constructor(redis: Redis, options: { ttlSeconds: number }) {
    const commands = redis as Redis & Partial<HeartbeatCommands>;
    if (!commands.tbTouch) {
      redis.defineCommand('tbTouch', { numberOfKeys: 2, lua: TOUCH });
      redis.defineCommand('tbStart', { numberOfKeys: 2, lua: START });
      redis.defineCommand('tbScheduleEnd', { numberOfKeys: 2, lua: SCHEDULE_END });
      redis.defineCommand('tbClaimDue', { numberOfKeys: 1, lua: CLAIM_DUE });
      redis.defineCommand('tbForget', { numberOfKeys: 2, lua: FORGET });
    }
    this.#redis = redis as Redis & HeartbeatCommands;
    this.#ttlMs = options.ttlSeconds * 1000;
  }

  /** Creation counts as the first heartbeat. Returns the expiry (epoch ms). */
  start(tunnelId: string, ownerId: string): Promise<number> {
    return this.#redis.tbStart(HB_PREFIX + tunnelId, DEADLINES_KEY, tunnelId, ownerId, this.#ttlMs);
  }

  /**
   * The hot path: one Redis round trip. Returns the new expiry (epoch ms), or null when the
   * tunnel is unknown, lapsed, ended or belongs to someone else (indistinguishable by design).
   */
  async touch(tunnelId: string, ownerId: string): Promise<number | null> {
    const deadline = await this.#redis.tbTouch(HB_PREFIX + tunnelId, DEADLINES_KEY, tunnelId, ownerId, this.#ttlMs);
    return deadline < 0 ? null : deadline;
  }

  /** Refuses further heartbeats and makes the tunnel due for the reaper after `delayMs`. */
  scheduleEnd(tunnelId: string, delayMs: number): Promise<number> {
    return this.#redis.tbScheduleEnd(HB_PREFIX + tunnelId, DEADLINES_KEY, tunnelId, Math.max(0, Math.round(delayMs)));
  }

  /** Leases up to `limit` due tunnels to the caller for `leaseMs`. */
  claimDue(limit: number, leaseMs: number): Promise<string[]> {
    return this.#redis.tbClaimDue(DEADLINES_KEY, limit, Math.round(leaseMs), `${this.#redis.options.keyPrefix ?? ''}${HB_PREFIX}`);
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

  /** Number of tracked deadlines (live tunnels plus pending ends). */
  size(): Promise<number> {
    return this.#redis.zcard(DEADLINES_KEY);
  }
}
