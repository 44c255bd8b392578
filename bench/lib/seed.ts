/**
 * Seeding by direct writes, not through the API: rows in `tunnels` (multi-row INSERT
 * over unnest arrays) and the matching Redis state (pipelined SET PX / ZADD), in the
 * exact layout src/tunnels/heartbeat-store.ts reads. test/bench/harness.test.ts proves a
 * real HeartbeatStore accepts what is seeded here, so a change of layout fails `npm test`
 * rather than silently benchmarking nothing.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type pg from 'pg';

/** Key names of src/tunnels/heartbeat-store.ts (relative to the client's keyPrefix). */
export const HB_PREFIX = 'hb:';
export const DEADLINES_KEY = 'deadlines';
export const EPOCH_KEY = 'epoch';

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

/**
 * Live tunnels as a heartbeat leaves them: `hb:<id>` = owner with a TTL, and the
 * deadline in `deadlines`. `redis` must carry the broker's keyPrefix.
 */
export async function seedLiveState(redis: Redis, tunnels: readonly SeedTunnel[], ttlMs: number, nowMs = Date.now()): Promise<void> {
  for (let offset = 0; offset < tunnels.length; offset += PIPELINE_BATCH) {
    const pipeline = redis.pipeline();
    const zargs: Array<string | number> = [];
    for (const t of tunnels.slice(offset, offset + PIPELINE_BATCH)) {
      pipeline.set(`${HB_PREFIX}${t.id}`, t.ownerId, 'PX', ttlMs);
      zargs.push(nowMs + ttlMs, t.id);
    }
    pipeline.zadd(DEADLINES_KEY, ...zargs);
    const results = await pipeline.exec();
    const failed = results?.find(([error]) => error);
    if (failed) throw failed[0];
  }
}

/**
 * Deadlines only, no heartbeat key: tunnels whose heartbeat has lapsed (Redis expired the
 * key), due at `deadlineMs`. Returns the ZADD's reply (members added).
 */
export async function setDeadlines(redis: Redis, ids: readonly string[], deadlineMs: number): Promise<number> {
  let added = 0;
  for (let offset = 0; offset < ids.length; offset += PIPELINE_BATCH) {
    const args = ids.slice(offset, offset + PIPELINE_BATCH).flatMap((id) => [deadlineMs, id]);
    added += await redis.zadd(DEADLINES_KEY, ...args);
  }
  return added;
}

/** Marks the key space as complete, so the broker does not rebuild it from PostgreSQL at start. */
export async function markEpoch(redis: Redis): Promise<void> {
  await redis.set(EPOCH_KEY, `${Date.now()}:bench`);
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
