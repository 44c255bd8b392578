import type { DeletionRecord, EmulatedAccessApp, EmulatedAccessPolicy, EmulatedDnsRecord, EmulatedTunnel, RequestLogEntry } from '../../src/cloudflare/emulator/emulator.js';
import type { Tunnel, TunnelEvent } from '../../src/generated/prisma/client.js';
import type { Execution } from './execution.js';

/** The system as the invariants read it: the database, and Cloudflare (the emulator's store and logs). */
export interface Snapshot {
  takenAt: number;
  /** Rows not ended, and every row of this sequence. */
  rows: Tunnel[];
  rowById: Map<string, Tunnel>;
  events: Map<string, TunnelEvent[]>;
  /** Upstream tunnels, soft-deleted ones included. */
  tunnels: EmulatedTunnel[];
  dnsRecords: EmulatedDnsRecord[];
  accessApps: EmulatedAccessApp[];
  accessPolicies: EmulatedAccessPolicy[];
  requests: RequestLogEntry[];
  deletions: DeletionRecord[];
}

export async function takeSnapshot(x: Execution): Promise<Snapshot> {
  const { prisma, emulator } = x.world;
  const rows = await prisma.tunnel.findMany({
    where: { OR: [{ status: { not: 'ended' } }, { createdAt: { gte: new Date(x.model.startedAt - 1000) } }] },
    orderBy: { createdAt: 'asc' },
  });
  const events = new Map<string, TunnelEvent[]>();
  const all = await prisma.tunnelEvent.findMany({ where: { tunnelId: { in: rows.map((r) => r.id) } }, orderBy: { id: 'asc' } });
  for (const e of all) events.set(e.tunnelId, [...(events.get(e.tunnelId) ?? []), e]);
  return {
    takenAt: Date.now(),
    rows,
    rowById: new Map(rows.map((r) => [r.id, r])),
    events,
    tunnels: emulator.allTunnels(),
    dnsRecords: emulator.dnsRecords(),
    accessApps: emulator.accessApps(),
    accessPolicies: emulator.accessPolicies(),
    requests: [...emulator.requests],
    deletions: emulator.deletions(),
  };
}

/** "5c1e2f3a e3-s1 active": how reports name a row. */
export function describeRow(row: Tunnel | undefined): string {
  if (!row) return '(no row)';
  return `row ${row.id.slice(0, 8)} ${row.slug} ${row.status}${row.endReason ? ` (${row.endReason})` : ''}`;
}

/** The row an upstream tunnel belongs to, by its name `<prefix><row id>`. */
export function rowIdOfTunnelName(name: string): string | undefined {
  return /([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(name)?.[1];
}

/** The upstream tunnel id a tunnel CNAME points at. */
export function tunnelIdOfTarget(content: string | undefined): string | undefined {
  return /^([0-9a-f-]{36})\.cfargotunnel\.com$/.exec(content ?? '')?.[1];
}
