/**
 * Seeding by direct writes, not through the API: rows in `tunnels` (multi-row INSERT
 * over unnest arrays) and the matching Redis state (pipelined HSET / ZADD per heartbeat
 * bucket), in the layout src/tunnels/heartbeat-keys.ts gives and heartbeat-store.ts reads. test/bench/harness.test.ts proves a
 * real HeartbeatStore accepts what is seeded here, so a change of layout fails `npm test`
 * rather than silently benchmarking nothing.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { RedisClient } from '../../src/redis/redis-client.js';
import { HEARTBEAT_BUCKET_KEYS, heartbeatBucket } from '../../src/tunnels/heartbeat-keys.js';

export interface SeedTunnel {
  id: string;
  ownerId: string;
  slug: string;
  hostname: string;
  port: number;
  cfTunnelId: string;
  dnsRecordId: string;
}

export interface MakeTunnelsOptions {
  /** Tunnels go round-robin to this many users: tunnel i belongs to user (i mod users). */
  users: number;
  domain: string;
  /** Index of the first tunnel: slugs are unique across calls that do not overlap. */
  startIndex?: number;
  /** Distinguishes users of separate batches that must not share owners. */
  userPrefix?: string;
  /** Slug prefix; slugs are `<slugPrefix><index>`. */
  slugPrefix?: string;
}

/** `count` active tunnels with fresh ids (upstream ids are random: fill them from the emulator if teardown must find them). */
export function makeTunnels(count: number, options: MakeTunnelsOptions): SeedTunnel[] {
  const start = options.startIndex ?? 0;
  const userPrefix = options.userPrefix ?? 'bench-user-';
  const slugPrefix = options.slugPrefix ?? 'bench-';
  const tunnels: SeedTunnel[] = [];
  for (let i = start; i < start + count; i++) {
    const slug = `${slugPrefix}${i}`;
    tunnels.push({
      id: randomUUID(),
      ownerId: `${userPrefix}${i % options.users}`,
      slug,
      hostname: `${slug}.${options.domain}`,
      port: 1024 + (i % 50_000),
      cfTunnelId: randomUUID(),
      dnsRecordId: randomBytes(16).toString('hex'),
    });
  }
  return tunnels;
}

const INSERT_BATCH = 5_000;

/** Multi-row INSERT of active rows, 5,000 per statement. Returns the number inserted. */
export async function insertTunnels(client: pg.Client | pg.PoolClient, tunnels: readonly SeedTunnel[]): Promise<number> {
  let inserted = 0;
  for (let offset = 0; offset < tunnels.length; offset += INSERT_BATCH) {
    const batch = tunnels.slice(offset, offset + INSERT_BATCH);
    const result = await client.query(
      `INSERT INTO tunnels (id, owner_id, slug, hostname, port, status, cf_tunnel_id, dns_record_id)
       SELECT id, owner_id, slug, hostname, port, 'active'::tunnel_status, cf_tunnel_id, dns_record_id
       FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::uuid[], $7::text[])
         AS t(id, owner_id, slug, hostname, port, cf_tunnel_id, dns_record_id)`,
      [
        batch.map((t) => t.id),
        batch.map((t) => t.ownerId),
        batch.map((t) => t.slug),
        batch.map((t) => t.hostname),
        batch.map((t) => t.port),
        batch.map((t) => t.cfTunnelId),
        batch.map((t) => t.dnsRecordId),
      ],
    );
    inserted += result.rowCount ?? 0;
  }
  return inserted;
}

const PIPELINE_BATCH = 2_000;

/** The ids grouped by heartbeat bucket: a pipeline per bucket stays within one cluster slot. */
function byBucket<T extends string | { id: string }>(items: readonly T[]): Map<number, T[]> {
  const groups = new Map<number, T[]>();
  for (const item of items) {
    const bucket = heartbeatBucket(typeof item === 'string' ? item : item.id);
    let group = groups.get(bucket);
    if (!group) groups.set(bucket, (group = []));
    group.push(item);
  }
  return groups;
}

/**
 * Live tunnels as a heartbeat leaves them: the owner in its bucket's `hb:{hbN}` hash and the
 * deadline in its `deadlines:{hbN}`. `redis` must carry the broker's keyPrefix.
 */
export async function seedLiveState(redis: RedisClient, tunnels: readonly SeedTunnel[], ttlMs: number, nowMs = Date.now()): Promise<void> {
  for (const [bucket, group] of byBucket(tunnels)) {
    const keys = HEARTBEAT_BUCKET_KEYS[bucket]!;
    for (let offset = 0; offset < group.length; offset += PIPELINE_BATCH) {
      const batch = group.slice(offset, offset + PIPELINE_BATCH);
      const pipeline = redis.pipeline();
      pipeline.hset(keys.owners, Object.fromEntries(batch.map((t) => [t.id, t.ownerId])));
      pipeline.zadd(keys.deadlines, ...batch.flatMap((t) => [nowMs + ttlMs, t.id]));
      const results = await pipeline.exec();
      const failed = results?.find(([error]) => error);
      if (failed) throw failed[0];
    }
  }
}

/**
 * Deadlines only, no owner: tunnels whose heartbeat has lapsed, due at `deadlineMs`.
 * Returns the ZADDs' replies (members added).
 */
export async function setDeadlines(redis: RedisClient, ids: readonly string[], deadlineMs: number): Promise<number> {
  let added = 0;
  for (const [bucket, group] of byBucket(ids)) {
    for (let offset = 0; offset < group.length; offset += PIPELINE_BATCH) {
      const args = group.slice(offset, offset + PIPELINE_BATCH).flatMap((id) => [deadlineMs, id]);
      added += await redis.zadd(HEARTBEAT_BUCKET_KEYS[bucket]!.deadlines, ...args);
    }
  }
  return added;
}

/** Members of every bucket's deadline set. */
export async function countDeadlines(redis: RedisClient): Promise<number> {
  const cards = await Promise.all(HEARTBEAT_BUCKET_KEYS.map((k) => redis.zcard(k.deadlines)));
  return cards.reduce((a, b) => a + b, 0);
}

/** Marks every bucket complete, so the broker does not rebuild it from PostgreSQL at start. */
export async function markEpoch(redis: RedisClient): Promise<void> {
  await Promise.all(HEARTBEAT_BUCKET_KEYS.map((k) => redis.set(k.epoch, `${Date.now()}:bench`)));
}

export interface UpstreamTarget {
  /** The emulator's API base, …/client/v4 */
  url: string;
  apiToken: string;
  accountId: string;
  zoneId: string;
  tunnelNamePrefix: string;
}

/**
 * Makes each tunnel exist upstream as the broker would have made it (tunnel `<prefix><row id>`
 * and a CNAME to it), and records the upstream ids on the seed objects, so that ending them
 * takes the normal path (deletes that find something) rather than 404s.
 */
export async function seedUpstream(target: UpstreamTarget, tunnels: SeedTunnel[], concurrency = 16): Promise<void> {
  const headers = { authorization: `Bearer ${target.apiToken}`, 'content-type': 'application/json' };
  const post = async (path: string, body: unknown): Promise<string> => {
    const res = await fetch(`${target.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(10_000) });
    const json = (await res.json()) as { success?: boolean; result?: { id?: string }; errors?: unknown };
    if (!res.ok || !json.result?.id) throw new Error(`emulator ${path}: ${res.status} ${JSON.stringify(json.errors)}`);
    return json.result.id;
  };
  let next = 0;
  const workers = Array.from({ length: Math.min(concurrency, tunnels.length) }, async () => {
    while (next < tunnels.length) {
      const t = tunnels[next++]!;
      t.cfTunnelId = await post(`/accounts/${target.accountId}/cfd_tunnel`, { name: `${target.tunnelNamePrefix}${t.id}`, config_src: 'cloudflare' });
      t.dnsRecordId = await post(`/zones/${target.zoneId}/dns_records`, {
        type: 'CNAME',
        name: t.hostname,
        content: `${t.cfTunnelId}.cfargotunnel.com`,
        proxied: true,
        ttl: 1,
      });
    }
  });
  await Promise.all(workers);
}
