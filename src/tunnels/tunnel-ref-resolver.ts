import { AppError } from '../errors/catalogue.js';
import type { PrismaClient } from '../generated/prisma/client.js';
import { SLUG_PATTERN } from './slug.js';
import { parseTunnelRef } from './tunnel-ref.js';

/**
 * Turns what a caller named a tunnel by (GET and DELETE /v1/tunnels/:tunnelId) into the id of
 * one of their tunnels, for TunnelService to take from there. Not the heartbeat's: that takes
 * the id only, and stays one Redis call.
 */
export class TunnelRefResolver {
  readonly #prisma: PrismaClient;
  /** `.<tunnel domain>` of each account: every hostname the broker gives out is `<slug>` followed by one of these. */
  readonly #suffixes: string[];

  constructor(prisma: PrismaClient, tunnelDomains: readonly string[]) {
    this.#prisma = prisma;
    this.#suffixes = tunnelDomains.map((d) => `.${d}`);
  }

  /**
   * An id is used as is (TunnelService checks the owner). A hostname or a slug is looked up
   * among the owner's tunnels that are not ended, one query on the live-slug index: a name is
   * free again once its tunnel has ended, so it no longer names that tunnel. A hostname
   * that is not `<slug>.<TUNNEL_DOMAIN>` names no tunnel of ours, and is 404 without a query.
   */
  async resolve(ownerId: string, text: string): Promise<string> {
    const ref = parseTunnelRef(text);
    if (ref === undefined) throw new AppError('TUNNEL_NOT_FOUND');
    if ('id' in ref) return ref.id;
    const slug = 'slug' in ref ? ref.slug : this.#slugOf(ref.hostname);
    if (slug === undefined || !SLUG_PATTERN.test(slug)) throw new AppError('TUNNEL_NOT_FOUND');
    const hostname = 'hostname' in ref ? ref.hostname : null;
    // Raw SQL for the literal `status <> 'ended'`: it is what lets PostgreSQL use the partial
    // unique index tunnels_live_slug_key (at most one row). Prisma's query API sends the status
    // as a cast parameter, which cannot prove the index's predicate, and scans the owner's rows,
    // ended ones included.
    const rows = await this.#prisma.$queryRaw<Array<{ id: string }>>`
      SELECT id::text AS id FROM tunnels
      WHERE slug = ${slug} AND status <> 'ended' AND owner_id = ${ownerId} AND (${hostname}::text IS NULL OR hostname = ${hostname}::text)
      LIMIT 1`;
    const row = rows[0];
    if (!row) throw new AppError('TUNNEL_NOT_FOUND');
    return row.id;
  }

  #slugOf(hostname: string): string | undefined {
    // The longest suffix first: a slug never contains a dot, so at most one can leave a valid slug.
    const suffix = this.#suffixes.filter((s) => hostname.endsWith(s)).sort((a, b) => b.length - a.length)[0];
    return suffix === undefined ? undefined : hostname.slice(0, -suffix.length);
  }
}
