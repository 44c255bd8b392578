import { Prisma, type PrismaClient, type Tunnel, type TunnelEndReason, type TunnelStatus } from '../generated/prisma/client.js';
import type { TunnelEventInput } from './tunnel-events.js';

/**
 * The statements on a create's and an end's path, as raw SQL: one round trip each where the
 * Prisma query API needs an interactive transaction of four or five (BEGIN, lock, count,
 * insert, COMMIT). They are the broker's most frequent writes, and most of a create's
 * database time and CPU was spent on those round trips (bench/results.md, section 2).
 * Everything else about tunnels goes through the Prisma query API.
 */

/** Every column of `tunnels`, named and typed as Prisma's Tunnel (test/tunnels/tunnel-rows.test.ts holds the two together). */
const TUNNEL_COLUMNS = Prisma.raw(
  'id, owner_id AS "ownerId", slug, hostname, port, status::text AS status, cf_tunnel_id AS "cfTunnelId", ' +
    'dns_record_id AS "dnsRecordId", end_reason::text AS "endReason", created_at AS "createdAt", updated_at AS "updatedAt", ended_at AS "endedAt"',
);

/** Namespace of the transaction-scoped advisory lock that serialises one user's creates. */
const QUOTA_LOCK_NAMESPACE = 7_301;

export interface NewTunnelRow {
  id: string;
  ownerId: string;
  slug: string;
  hostname: string;
  port: number;
}

/** Which row a transition applies to: by id, in one of these states, and the owner's when given. */
export interface TransitionWhere {
  id: string;
  from: readonly TunnelStatus[];
  ownerId?: string;
}

/** The columns a transition sets; `updatedAt` is always set to now. */
export interface TransitionData {
  status: TunnelStatus;
  cfTunnelId?: string | null;
  dnsRecordId?: string | null;
  endReason?: TunnelEndReason;
  endedAt?: Date;
}

export class TunnelRows {
  readonly #prisma: PrismaClient;

  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
  }

  /**
   * Inserts a `creating` row unless the owner already has `maxLive` tunnels that are not
   * ended: the count and the insert run under a per-user advisory lock, in one statement
   * (see the create_path migration). Returns undefined when the limit is reached; a slug
   * taken by a live tunnel throws the unique violation on tunnels_live_slug_key.
   */
  async insertLive(row: NewTunnelRow, maxLive: number): Promise<Tunnel | undefined> {
    const [inserted] = await this.#prisma.$queryRaw<Tunnel[]>`
      SELECT ${TUNNEL_COLUMNS}
      FROM insert_live_tunnel(${QUOTA_LOCK_NAMESPACE}::int, ${maxLive}::int, ${row.id}::uuid, ${row.ownerId}, ${row.slug}, ${row.hostname}, ${row.port}::int)`;
    return inserted;
  }

  /**
   * A conditional state change and its audit event, atomically, in one statement (a
   * data-modifying CTE): the event exists exactly when the change happened. Returns the
   * changed row, or undefined if no row matched. Filtering on `status::text` keeps the
   * planner on the primary key: on the bare enum it prefers the (status, updated_at) index,
   * whose cost grows with every tunnel that is, or recently was, in that state.
   */
  async transition(where: TransitionWhere, data: TransitionData, event: TunnelEventInput): Promise<Tunnel | undefined> {
    const sets = [Prisma.sql`status = ${data.status}::tunnel_status`, Prisma.sql`updated_at = ${new Date()}`];
    if (data.cfTunnelId !== undefined) sets.push(Prisma.sql`cf_tunnel_id = ${data.cfTunnelId}::uuid`);
    if (data.dnsRecordId !== undefined) sets.push(Prisma.sql`dns_record_id = ${data.dnsRecordId}`);
    if (data.endReason !== undefined) sets.push(Prisma.sql`end_reason = ${data.endReason}::tunnel_end_reason`);
    if (data.endedAt !== undefined) sets.push(Prisma.sql`ended_at = ${data.endedAt}`);
    const owner = where.ownerId === undefined ? Prisma.empty : Prisma.sql`AND owner_id = ${where.ownerId}`;
    const [changed] = await this.#prisma.$queryRaw<Tunnel[]>`
      WITH changed AS (
        UPDATE tunnels SET ${Prisma.join(sets)}
        WHERE id = ${where.id}::uuid AND status::text = ANY(${[...where.from]}::text[]) ${owner}
        RETURNING *
      ), recorded AS (
        INSERT INTO tunnel_events (tunnel_id, type, actor, details)
        SELECT id, ${event.type}::tunnel_event_type, ${event.actor}, ${JSON.stringify(event.details ?? {})}::jsonb FROM changed
      )
      SELECT ${TUNNEL_COLUMNS} FROM changed`;
    return changed;
  }

  /** Marks an `ending` row as being worked on again (see TunnelService.recoverStuck); no event. */
  async touchEnding(id: string): Promise<Tunnel | undefined> {
    const [row] = await this.#prisma.$queryRaw<Tunnel[]>`
      UPDATE tunnels SET updated_at = ${new Date()} WHERE id = ${id}::uuid AND status::text = 'ending'
      RETURNING ${TUNNEL_COLUMNS}`;
    return row;
  }
}
