import { Prisma, type PrismaClient, type Tunnel, type TunnelAccessMode, type TunnelEndReason, type TunnelStatus } from '../generated/prisma/client.js';
import type { Placement } from '../cloudflare/cloudflare-accounts.js';
import { hasSqlState } from '../db/database-error.js';
import type { TunnelEventInput } from './tunnel-events.js';

/**
 * The statements on a create's and an end's path, as raw SQL: one round trip each where the
 * Prisma query API needs an interactive transaction of four or five (BEGIN, lock, count,
 * insert, COMMIT). They are the broker's most frequent writes, and most of a create's
 * database time and CPU was spent on those round trips (bench/results.md, section 2).
 * Everything else about tunnels goes through the Prisma query API.
 *
 * Leases (see the tunnel_leases migration): lease expiry is computed with the database's
 * clock, so brokers with skewed clocks agree on when a lease has lapsed.
 */

/** Every column of `tunnels`, named and typed as Prisma's Tunnel (test/tunnels/tunnel-rows.test.ts holds the two together). */
const TUNNEL_COLUMNS = Prisma.raw(
  'id, owner_id AS "ownerId", slug, hostname, port, status::text AS status, cf_tunnel_id AS "cfTunnelId", ' +
    'dns_record_id AS "dnsRecordId", end_reason::text AS "endReason", created_at AS "createdAt", updated_at AS "updatedAt", ended_at AS "endedAt", ' +
    'lease_generation AS "leaseGeneration", lease_expires_at AS "leaseExpiresAt", delete_requested_at AS "deleteRequestedAt", ' +
    'access_mode::text AS "accessMode", access_emails AS "accessEmails", access_app_id AS "accessAppId", access_policy_id AS "accessPolicyId", ' +
    'cf_account_id AS "cfAccountId"',
);

/** Namespace of the transaction-scoped advisory lock that serialises one user's creates. */
const QUOTA_LOCK_NAMESPACE = 7_301;
/** Namespace of the advisory lock under which creates count each account's tunnels and pick one (see the cloudflare_accounts migration). */
const PLACEMENT_LOCK_NAMESPACE = 7_302;
/** What insert_live_tunnel_placed raises when every account is at its capacity. */
const ACCOUNTS_FULL_SQLSTATE = 'TBCAP';

export interface NewTunnelRow {
  id: string;
  ownerId: string;
  slug: string;
  port: number;
}

/** Every account at its capacity: no row was inserted. */
export class AccountsFullError extends Error {
  constructor() {
    super('Every Cloudflare account is at its tunnel capacity.');
    this.name = 'AccountsFullError';
  }
}

/** Which row a transition applies to: by id, in one of these states, and the owner's when given. */
export interface TransitionWhere {
  id: string;
  from: readonly TunnelStatus[];
  ownerId?: string;
  /** Fencing: only while the row's lease generation is still this one. */
  generation?: number;
  /** Only while nobody holds a lease on it (none, or lapsed): an active tunnel's audience change. */
  leaseFree?: boolean;
}

/** The columns a transition sets; `updatedAt` is always set to now. */
export interface TransitionData {
  status: TunnelStatus;
  cfTunnelId?: string | null;
  dnsRecordId?: string | null;
  endReason?: TunnelEndReason;
  endedAt?: Date;
  /** Take the work over: a new lease generation (the previous holder is fenced off). */
  newGeneration?: boolean;
  /** The lease from now (database clock), or null to clear it (the row needs no holder). */
  leaseMs?: number | null;
  /** Who may open the URL (PATCH). */
  access?: { mode: TunnelAccessMode; emails: string[] };
  accessAppId?: string | null;
  accessPolicyId?: string | null;
}

/** What a create made upstream, recorded on its row as it becomes active. */
export interface ActivationData {
  cfTunnelId: string;
  dnsRecordId: string | null;
  accessAppId: string | null;
  accessPolicyId: string | null;
}

/** What a takeover by the reaper found. */
export type TakeOverResult =
  /** Taken: the caller holds the lease of `row` (a new generation). `previous` is the state it was taken from. */
  | { taken: true; row: Tunnel; previous: 'active' | 'creating' | 'ending' }
  /** Someone holds its lease until `leaseExpiresAt` (database clock, as ms from now). */
  | { taken: false; status: 'creating' | 'ending'; retryInMs: number }
  /** Ended, or no such row. */
  | { taken: false; status: 'ended' | 'missing' };

/** A lease renewal: whether the caller still holds it, and whether a DELETE was recorded meanwhile. */
export interface RenewResult {
  held: boolean;
  deleteRequested: boolean;
}

export class TunnelRows {
  readonly #prisma: PrismaClient;

  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
  }

  /**
   * Inserts a `creating` row unless the owner already has `maxLive` tunnels that are not
   * ended, in the least loaded account of `placement` still below its capacity, its hostname
   * `<slug>.<that account's domain>`. The per-user count runs under a per-user advisory lock,
   * the per-account counts under the placement lock, count and insert in one statement (see
   * the create_path, tunnel_leases and cloudflare_accounts migrations). The caller holds the
   * row's first lease (generation 1) for `leaseMs`. Returns undefined when the user's limit is
   * reached; throws AccountsFullError when every account is full; a slug taken by a live
   * tunnel throws the unique violation on tunnels_live_slug_key.
   */
  async insertLive(row: NewTunnelRow, maxLive: number, leaseMs: number, placement: Placement): Promise<Tunnel | undefined> {
    try {
      const [inserted] = await this.#prisma.$queryRaw<Tunnel[]>`
        SELECT ${TUNNEL_COLUMNS}
        FROM insert_live_tunnel_placed(${QUOTA_LOCK_NAMESPACE}::int, ${maxLive}::int, ${PLACEMENT_LOCK_NAMESPACE}::int,
          ${placement.accountIds}::text[], ${placement.capacities}::int[], ${placement.domains}::text[], ${placement.primaryAccountId},
          ${row.id}::uuid, ${row.ownerId}, ${row.slug}, ${row.port}::int, ${Math.round(leaseMs)}::int)`;
      return inserted;
    } catch (error) {
      if (hasSqlState(error, ACCOUNTS_FULL_SQLSTATE)) throw new AccountsFullError();
      throw error;
    }
  }

  /**
   * Live tunnels per account id (rows with none recorded counted under `primaryAccountId`): metrics.
   * Read from the counters the database keeps (cloudflare_account_load, '' for those rows), so a
   * scrape costs one row per account however many tunnels are live.
   */
  async liveCountsByAccount(primaryAccountId: string): Promise<Map<string, number>> {
    const rows = await this.#prisma.$queryRaw<Array<{ account: string; live: number }>>`
      SELECT CASE WHEN cf_account_id = '' THEN ${primaryAccountId} ELSE cf_account_id END AS account, sum(live)::int AS live
      FROM cloudflare_account_load GROUP BY 1`;
    return new Map(rows.map((r) => [r.account, r.live]));
  }

  /**
   * A conditional state change and its audit event, atomically, in one statement (a
   * data-modifying CTE): the event exists exactly when the change happened. Returns the
   * changed row, or undefined if no row matched. Filtering on `status::text` keeps the
   * planner on the primary key: on the bare enum it prefers the (status, updated_at) index,
   * whose cost grows with every tunnel that is, or recently was, in that state.
   */
  async transition(where: TransitionWhere, data: TransitionData, event: TunnelEventInput | null): Promise<Tunnel | undefined> {
    const sets = [Prisma.sql`status = ${data.status}::tunnel_status`, Prisma.sql`updated_at = ${new Date()}`];
    if (data.cfTunnelId !== undefined) sets.push(Prisma.sql`cf_tunnel_id = ${data.cfTunnelId}::uuid`);
    if (data.dnsRecordId !== undefined) sets.push(Prisma.sql`dns_record_id = ${data.dnsRecordId}`);
    if (data.endReason !== undefined) sets.push(Prisma.sql`end_reason = ${data.endReason}::tunnel_end_reason`);
    if (data.endedAt !== undefined) sets.push(Prisma.sql`ended_at = ${data.endedAt}`);
    if (data.newGeneration) sets.push(Prisma.sql`lease_generation = lease_generation + 1`);
    if (data.leaseMs !== undefined) sets.push(data.leaseMs === null ? Prisma.sql`lease_expires_at = NULL` : Prisma.sql`lease_expires_at = ${leaseFromNow(data.leaseMs)}`);
    if (data.access !== undefined) sets.push(Prisma.sql`access_mode = ${data.access.mode}::tunnel_access_mode`, Prisma.sql`access_emails = ${data.access.emails}::text[]`);
    if (data.accessAppId !== undefined) sets.push(Prisma.sql`access_app_id = ${data.accessAppId}`);
    if (data.accessPolicyId !== undefined) sets.push(Prisma.sql`access_policy_id = ${data.accessPolicyId}`);
    const conditions = [Prisma.sql`id = ${where.id}::uuid`, Prisma.sql`status::text = ANY(${[...where.from]}::text[])`];
    if (where.ownerId !== undefined) conditions.push(Prisma.sql`owner_id = ${where.ownerId}`);
    if (where.generation !== undefined) conditions.push(Prisma.sql`lease_generation = ${where.generation}::int`);
    if (where.leaseFree) conditions.push(Prisma.sql`(lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())`);
    if (event === null) {
      const [row] = await this.#prisma.$queryRaw<Tunnel[]>`
        UPDATE tunnels SET ${Prisma.join(sets)} WHERE ${Prisma.join(conditions, ' AND ')} RETURNING ${TUNNEL_COLUMNS}`;
      return row;
    }
    const [changed] = await this.#prisma.$queryRaw<Tunnel[]>`
      WITH changed AS (
        UPDATE tunnels SET ${Prisma.join(sets)}
        WHERE ${Prisma.join(conditions, ' AND ')}
        RETURNING *
      ), recorded AS (
        INSERT INTO tunnel_events (tunnel_id, type, actor, details)
        SELECT id, ${event.type}::tunnel_event_type, ${event.actor}, ${JSON.stringify(event.details ?? {})}::jsonb FROM changed
      )
      SELECT ${TUNNEL_COLUMNS} FROM changed`;
    return changed;
  }

  /**
   * A create's activation: its `creating` row becomes `active` with what was made upstream,
   * and its `created` event is written, in one statement (activate_created_tunnel, whose plan
   * PostgreSQL keeps). Only while the caller's lease generation still holds, the lease has not
   * lapsed, and no DELETE was recorded; otherwise nothing changes and this returns undefined.
   */
  async activate(id: string, generation: number, made: ActivationData, event: { actor: string; details: Record<string, unknown> }): Promise<Tunnel | undefined> {
    const [row] = await this.#prisma.$queryRaw<Tunnel[]>`
      SELECT ${TUNNEL_COLUMNS}
      FROM activate_created_tunnel(${id}::uuid, ${generation}::int, ${new Date()}, ${made.cfTunnelId}::uuid, ${made.dnsRecordId},
        ${made.accessAppId}, ${made.accessPolicyId}, ${event.actor}, ${JSON.stringify(event.details)}::jsonb)`;
    return row;
  }

  /**
   * The reaper takes over a due tunnel in one statement: an `active` one whose heartbeat
   * lapsed, or a `creating`/`ending` one whose lease has lapsed (its holder died, or a failed
   * teardown's retry time has come). The taker gets a new lease generation; the event says why.
   */
  async takeOver(id: string, leaseMs: number, details: { heartbeatTtlSeconds: number }): Promise<TakeOverResult> {
    const [row] = await this.#prisma.$queryRaw<Array<Tunnel & { previous: 'active' | 'creating' | 'ending' }>>`
      WITH prev AS (
        SELECT id, status AS prev_status FROM tunnels WHERE id = ${id}::uuid FOR UPDATE
      ), changed AS (
        UPDATE tunnels t SET
          status = 'ending',
          end_reason = CASE
            WHEN prev.prev_status = 'active' THEN 'heartbeat_lapsed'::tunnel_end_reason
            WHEN prev.prev_status = 'creating' AND t.delete_requested_at IS NOT NULL THEN 'deleted'::tunnel_end_reason
            WHEN prev.prev_status = 'creating' THEN 'create_failed'::tunnel_end_reason
            ELSE t.end_reason END,
          lease_generation = t.lease_generation + 1,
          lease_expires_at = ${leaseFromNow(leaseMs)},
          updated_at = ${new Date()}
        FROM prev
        WHERE t.id = prev.id AND (
          prev.prev_status = 'active'
          OR (prev.prev_status IN ('creating', 'ending') AND (t.lease_expires_at IS NULL OR t.lease_expires_at <= clock_timestamp()))
        )
        RETURNING t.*, prev.prev_status
      ), recorded AS (
        INSERT INTO tunnel_events (tunnel_id, type, actor, details)
        SELECT id,
          CASE WHEN prev_status = 'active' THEN 'heartbeat_lapsed'::tunnel_event_type ELSE 'create_failed'::tunnel_event_type END,
          'reaper',
          CASE WHEN prev_status = 'active' THEN jsonb_build_object('ttlSeconds', ${details.heartbeatTtlSeconds}::int)
            ELSE jsonb_build_object('reason', 'create_abandoned') END
        FROM changed WHERE prev_status <> 'ending'
      )
      SELECT ${TUNNEL_COLUMNS}, prev_status::text AS previous FROM changed`;
    if (row) {
      const { previous, ...tunnel } = row;
      return { taken: true, row: tunnel, previous };
    }
    const [state] = await this.#prisma.$queryRaw<Array<{ status: TunnelStatus; retryInMs: number | null }>>`
      SELECT status::text AS status,
        GREATEST(0, EXTRACT(EPOCH FROM (lease_expires_at - clock_timestamp())) * 1000)::float8 AS "retryInMs"
      FROM tunnels WHERE id = ${id}::uuid`;
    if (!state || state.status === 'ended') return { taken: false, status: state ? 'ended' : 'missing' };
    // Active cannot get here (it is always taken); creating/ending are held by someone.
    return { taken: false, status: state.status as 'creating' | 'ending', retryInMs: state.retryInMs ?? 0 };
  }

  /** The holder pushes its lease forward. Also tells it whether a DELETE was recorded meanwhile. */
  async renewLease(id: string, generation: number, leaseMs: number): Promise<RenewResult> {
    const [row] = await this.#prisma.$queryRaw<Array<{ deleteRequested: boolean }>>`
      UPDATE tunnels SET lease_expires_at = ${leaseFromNow(leaseMs)}
      WHERE id = ${id}::uuid AND lease_generation = ${generation}::int AND status::text IN ('creating', 'ending')
      RETURNING delete_requested_at IS NOT NULL AS "deleteRequested"`;
    return row ? { held: true, deleteRequested: row.deleteRequested } : { held: false, deleteRequested: false };
  }

  /**
   * Saves upstream ids the holder has learned (made, or found by a lookup) before it does
   * anything else with them, so whoever takes over knows exactly what exists. Fenced.
   */
  async saveUpstreamIds(
    id: string,
    generation: number,
    ids: { cfTunnelId?: string; dnsRecordId?: string; accessAppId?: string | null; accessPolicyId?: string | null; access?: { mode: TunnelAccessMode; emails: string[] } },
  ): Promise<boolean> {
    const sets = [Prisma.sql`updated_at = ${new Date()}`];
    if (ids.access !== undefined) sets.push(Prisma.sql`access_mode = ${ids.access.mode}::tunnel_access_mode`, Prisma.sql`access_emails = ${ids.access.emails}::text[]`);
    if (ids.accessAppId !== undefined) sets.push(Prisma.sql`access_app_id = ${ids.accessAppId}`);
    if (ids.accessPolicyId !== undefined) sets.push(Prisma.sql`access_policy_id = ${ids.accessPolicyId}`);
    if (ids.cfTunnelId !== undefined) sets.push(Prisma.sql`cf_tunnel_id = ${ids.cfTunnelId}::uuid`);
    if (ids.dnsRecordId !== undefined) sets.push(Prisma.sql`dns_record_id = ${ids.dnsRecordId}`);
    const count = await this.#prisma.$executeRaw`
      UPDATE tunnels SET ${Prisma.join(sets)}
      WHERE id = ${id}::uuid AND lease_generation = ${generation}::int AND status::text IN ('creating', 'ending')`;
    return count === 1;
  }

  /**
   * Records a DELETE of a tunnel still being created (the first one is an event; repeats
   * change nothing). Returns the row if it is `creating`, undefined otherwise.
   */
  async requestDelete(id: string, ownerId: string, event: TunnelEventInput): Promise<Tunnel | undefined> {
    const [row] = await this.#prisma.$queryRaw<Tunnel[]>`
      WITH changed AS (
        -- now() is the statement's transaction start, the same in SET and RETURNING.
        UPDATE tunnels SET delete_requested_at = COALESCE(delete_requested_at, now()::timestamptz(3)), updated_at = ${new Date()}
        WHERE id = ${id}::uuid AND owner_id = ${ownerId} AND status::text = 'creating'
        RETURNING *, (delete_requested_at = now()::timestamptz(3)) AS first_request
      ), recorded AS (
        INSERT INTO tunnel_events (tunnel_id, type, actor, details)
        SELECT id, ${event.type}::tunnel_event_type, ${event.actor}, ${JSON.stringify(event.details ?? {})}::jsonb FROM changed WHERE first_request
      )
      SELECT ${TUNNEL_COLUMNS} FROM changed`;
    return row;
  }

  /** Rows left `creating`/`ending` whose lease lapsed more than `graceMs` ago: nobody is working on them. */
  async abandoned(graceMs: number, limit: number): Promise<string[]> {
    const rows = await this.#prisma.$queryRaw<Array<{ id: string }>>`
      SELECT id FROM tunnels
      WHERE status IN ('creating', 'ending')
        AND (lease_expires_at IS NULL OR lease_expires_at < clock_timestamp() - ${Math.round(graceMs)}::int * interval '1 millisecond')
      LIMIT ${limit}::int`;
    return rows.map((r) => r.id);
  }
}

/** `clock_timestamp() + ms`, as SQL: lease times come from the database's clock. */
function leaseFromNow(ms: number): Prisma.Sql {
  return Prisma.sql`clock_timestamp() + ${Math.max(0, Math.round(ms))}::int * interval '1 millisecond'`;
}
