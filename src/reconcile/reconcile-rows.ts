import type { Prisma, PrismaClient } from '../generated/prisma/client.js';
import type { Candidate, OwnershipRef, RowKeys, RowRef } from './reconcile-planner.js';

/** Ids per `IN (...)` when loading rows: keeps each query's parameter list modest. */
const DB_CHUNK = 1000;
const ROW_REF_SELECT = { id: true, status: true, cfTunnelId: true, dnsRecordId: true, hostname: true, endedAt: true } as const;

/** The reconciler's reads and writes of PostgreSQL. */
export class ReconcileRows {
  readonly #prisma: PrismaClient;

  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
  }

  /** Every row matching any of the keys. */
  async load(keys: RowKeys): Promise<RowRef[]> {
    const rows = new Map<string, RowRef>();
    const load = async (values: string[], where: (chunk: string[]) => Prisma.TunnelWhereInput) => {
      for (let i = 0; i < values.length; i += DB_CHUNK) {
        const found = await this.#prisma.tunnel.findMany({ where: where(values.slice(i, i + DB_CHUNK)), select: ROW_REF_SELECT });
        for (const row of found) rows.set(row.id, row);
      }
    };
    await load(keys.ids, (chunk) => ({ id: { in: chunk } }));
    await load(keys.cfTunnelIds, (chunk) => ({ cfTunnelId: { in: chunk } }));
    await load(keys.dnsRecordIds, (chunk) => ({ dnsRecordId: { in: chunk } }));
    await load(keys.liveHostnames, (chunk) => ({ hostname: { in: chunk }, status: { not: 'ended' } }));
    return [...rows.values()];
  }

  /** A fresh read of the rows that may reference one resource: the re-check just before its delete. */
  forRef(ref: OwnershipRef): Promise<RowRef[]> {
    const byId = (id: string | null) => (id ? [{ id }] : []);
    if (ref.resource === 'access_app' || ref.resource === 'access_policy') return this.#prisma.tunnel.findMany({ where: { id: ref.rowId }, select: ROW_REF_SELECT });
    const where: Prisma.TunnelWhereInput = ref.resource === 'tunnel'
      ? { OR: [{ id: ref.rowId }, { cfTunnelId: ref.cfTunnelId }] }
      : {
          OR: [
            { dnsRecordId: ref.recordId },
            { cfTunnelId: ref.target },
            ...byId(ref.targetRowId),
            ...byId(ref.markRowId),
            { hostname: ref.hostname, status: { not: 'ended' } },
          ],
        };
    return this.#prisma.tunnel.findMany({ where, select: ROW_REF_SELECT });
  }

  /** Adds the removal of an ended row's leftover to that tunnel's audit trail. */
  async recordOrphanRemoved(rowId: string, removed: Pick<Candidate, 'entry' | 'reason'>): Promise<void> {
    const { resource, id, name } = removed.entry;
    await this.#prisma.tunnelEvent.create({
      data: { tunnelId: rowId, type: 'orphan_removed', actor: 'reconciler', details: { resource, id, name, reason: removed.reason } },
    });
  }
}
