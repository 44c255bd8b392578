/**
 * Lua shared by the broker's Redis scripts. Scripts read time from Redis (TIME) rather than
 * take it from the caller, so every instance agrees on one clock whatever their own say.
 */

/** Defines the local `now`: Redis's clock in milliseconds. Paste at the top of a script that needs it. */
export const NOW_MS = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/**
 * Compare-and-delete. KEYS: the lock. ARGV: the holder's token. Deletes the key only while it
 * still holds that token, so a holder whose lease ran out never removes its successor's lock.
 * Returns 1 if deleted, else 0.
 */
export const RELEASE_LOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * Compare-and-extend. KEYS: the lock. ARGV: the holder's token, the new lease (ms). Extends
 * the lease only while the key still holds that token. Returns 1 if extended, else 0.
 */
export const RENEW_LOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`;
