/**
 * Where a tunnel's heartbeat state lives in Redis. Tunnels are spread over a fixed number of
 * buckets by a hash of their id; each bucket's keys share one hash tag, so every script
 * touches a single Redis Cluster slot and no key carries every heartbeat:
 *
 *   hb:{hbN}           hash: tunnelId -> owner id (present while heartbeats are accepted)
 *   deadlines:{hbN}    sorted set: tunnelId -> epoch ms after which the reaper should act
 *   hbr:{hbN}:<id>     the tunnel's heartbeat count in the current rate window
 *   epoch:{hbN}        marks the bucket complete (written last by a rebuild from PostgreSQL)
 *   epoch-lock:{hbN}   the rebuild's lock for this bucket
 *
 * The count is fixed: changing it moves tunnels to other buckets, whose epochs are then
 * missing, so the brokers rebuild them from PostgreSQL (see docs/running-at-scale.md).
 */
export const HEARTBEAT_BUCKETS = 16;

export interface HeartbeatBucketKeys {
  bucket: number;
  owners: string;
  deadlines: string;
  epoch: string;
  rebuildLock: string;
  rate(tunnelId: string): string;
}

function keysOf(bucket: number): HeartbeatBucketKeys {
  const tag = `{hb${bucket}}`;
  const ratePrefix = `hbr:${tag}:`;
  return {
    bucket,
    owners: `hb:${tag}`,
    deadlines: `deadlines:${tag}`,
    epoch: `epoch:${tag}`,
    rebuildLock: `epoch-lock:${tag}`,
    rate: (tunnelId) => ratePrefix + tunnelId,
  };
}

/** Every bucket's keys, made once (relative to the client's keyPrefix). */
export const HEARTBEAT_BUCKET_KEYS: readonly HeartbeatBucketKeys[] = Object.freeze(Array.from({ length: HEARTBEAT_BUCKETS }, (_, i) => keysOf(i)));

/** The bucket of a tunnel: 32-bit FNV-1a of its id, so any id format spreads evenly. */
export function heartbeatBucket(tunnelId: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < tunnelId.length; i++) {
    hash ^= tunnelId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % HEARTBEAT_BUCKETS;
}

/** The keys of the bucket this tunnel lives in. */
export function heartbeatKeysOf(tunnelId: string): HeartbeatBucketKeys {
  return HEARTBEAT_BUCKET_KEYS[heartbeatBucket(tunnelId)]!;
}
