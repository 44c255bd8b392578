import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { ListedDnsRecord, ListedTunnel } from '../../src/cloudflare/tunnel-provider.js';
import { DNS_RECORD_MARK } from '../../src/cloudflare/tunnel-lookups.js';
import { type Plan, planRemovals, type PlannerOptions, type RowRef, rowKeysFor, type UpstreamListing } from '../../src/reconcile/reconcile-planner.js';

const DOMAIN = 'tunnels.test';
const PREFIX = 'tb-';
const GRACE_MS = 600_000;
const OPTIONS: PlannerOptions = { tunnelDomain: DOMAIN, tunnelNamePrefix: PREFIX, graceMs: GRACE_MS };
const NOW = Date.parse('2030-01-01T12:00:00Z');
const OLD = new Date(NOW - GRACE_MS - 1).toISOString();
const YOUNG = new Date(NOW - GRACE_MS + 1_000).toISOString();

function tunnel(name: string, createdAt: string | null = OLD): ListedTunnel {
  return { id: randomUUID(), name, createdAt };
}

function record(options: Partial<ListedDnsRecord> & { target?: string }): ListedDnsRecord {
  return {
    id: randomUUID().replace(/-/g, ''),
    name: `s${randomUUID().slice(0, 8)}.${DOMAIN}`,
    type: 'CNAME',
    content: `${options.target ?? randomUUID()}.cfargotunnel.com`,
    createdOn: OLD,
    comment: null,
    ...options,
  };
}

function row(id: string, status: RowRef['status'], fields: Partial<RowRef> = {}): RowRef {
  return { id, status, cfTunnelId: null, dnsRecordId: null, hostname: `x${id.slice(0, 8)}.${DOMAIN}`, ...fields };
}

const mark = (rowId: string, prefix = PREFIX) => `${DNS_RECORD_MARK}${prefix}${rowId}`;

function plan(listing: Partial<UpstreamListing>, rows: RowRef[] = []): Plan {
  return planRemovals({ tunnels: [], records: [], ...listing }, rows, NOW, OPTIONS);
}

/** Each listed id with what the plan does with it: a removal reason, or the skip reason. */
function outcomes(p: Plan): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of [...p.records, ...p.tunnels]) out[c.entry.id] = `remove:${c.reason}`;
  for (const s of p.skipped) out[s.id] = `keep:${s.reason}`;
  return out;
}

describe('tunnels', () => {
  it('removes a tunnel named <prefix><row id> that no row references once it is older than the grace, and names its row', () => {
    const t = tunnel(`${PREFIX}${randomUUID()}`);
    const p = plan({ tunnels: [t] });
    expect(outcomes(p)).toEqual({ [t.id]: 'remove:no_row' });
    expect(p.tunnels[0]!.entry).toMatchObject({ resource: 'tunnel', rowId: t.name.slice(PREFIX.length) });
  });

  it('keeps tunnels whose name is not the prefix and a lower-case uuid', () => {
    const names = [`other-${randomUUID()}`, `${PREFIX}not-a-row-id`, `${PREFIX}${randomUUID().toUpperCase()}`, `${PREFIX}${randomUUID()}-x`];
    const tunnels = names.map((n) => tunnel(n));
    const p = plan({ tunnels });
    expect(Object.values(outcomes(p))).toEqual(names.map(() => 'keep:name_not_ours'));
  });

  it('judges age by upstream creation time: young, unknown and future times all stay', () => {
    const young = tunnel(`${PREFIX}${randomUUID()}`, YOUNG);
    const unknown = tunnel(`${PREFIX}${randomUUID()}`, null);
    const future = tunnel(`${PREFIX}${randomUUID()}`, new Date(NOW + 60_000).toISOString());
    const p = plan({ tunnels: [young, unknown, future] });
    expect(outcomes(p)).toEqual({ [young.id]: 'keep:within_grace', [unknown.id]: 'keep:unknown_age', [future.id]: 'keep:within_grace' });
  });

  it('keeps a tunnel a live row references by name or by cf_tunnel_id, and removes one whose rows all ended', () => {
    const byName = tunnel(`${PREFIX}${randomUUID()}`);
    const byCfId = tunnel(`${PREFIX}${randomUUID()}`);
    const ended = tunnel(`${PREFIX}${randomUUID()}`);
    const rows = [
      row(byName.name.slice(PREFIX.length), 'creating'),
      row(randomUUID(), 'active', { cfTunnelId: byCfId.id.toUpperCase() }),
      row(ended.name.slice(PREFIX.length), 'ended', { cfTunnelId: ended.id }),
    ];
    expect(outcomes(plan({ tunnels: [byName, byCfId, ended] }, rows))).toEqual({
      [byName.id]: 'keep:live_row',
      [byCfId.id]: 'keep:live_row',
      [ended.id]: 'remove:row_ended',
    });
  });
  it('keeps what a row that ended within the grace referenced: its own teardown just removed it, and the listing may predate that', () => {
    const justEnded = tunnel(`${PREFIX}${randomUUID()}`);
    const longAgo = tunnel(`${PREFIX}${randomUUID()}`);
    const rows = [
      row(justEnded.name.slice(PREFIX.length), 'ended', { cfTunnelId: justEnded.id, endedAt: new Date(NOW - 100) }),
      row(longAgo.name.slice(PREFIX.length), 'ended', { cfTunnelId: longAgo.id, endedAt: new Date(NOW - 3_600_000) }),
    ];
    expect(outcomes(plan({ tunnels: [justEnded, longAgo] }, rows))).toEqual({ [justEnded.id]: 'keep:within_grace', [longAgo.id]: 'remove:row_ended' });
  });
});

describe('DNS records', () => {
  it('considers only CNAMEs under the domain that point at <uuid>.cfargotunnel.com', () => {
    const ours = tunnel(`${PREFIX}${randomUUID()}`);
    const outside = record({ name: `a.elsewhere.test`, target: ours.id });
    const notCname = record({ type: 'TXT', content: 'hello' });
    const notTunnel = record({ content: 'example.com' });
    const p = plan({ tunnels: [ours], records: [outside, notCname, notTunnel] });
    expect(outcomes(p)).toMatchObject({ [outside.id]: 'keep:outside_domain', [notCname.id]: 'keep:not_cname', [notTunnel.id]: 'keep:not_a_tunnel_target' });
  });

  it('removes a record pointing at a tunnel of ours, before the tunnel, and keeps one pointing at a tunnel it cannot prove is ours', () => {
    const ours = tunnel(`${PREFIX}${randomUUID()}`);
    const toOurs = record({ target: ours.id });
    const foreign = record({});
    const p = plan({ tunnels: [ours], records: [toOurs, foreign] });
    expect(outcomes(p)).toEqual({ [ours.id]: 'remove:no_row', [toOurs.id]: 'remove:no_row', [foreign.id]: 'keep:foreign_tunnel' });
    expect(p.recordsByTarget.get(ours.id)).toEqual(new Set([toOurs.id]));
  });

  it('counts a tunnel id a row recorded as ours, even once that tunnel is gone upstream', () => {
    const cfTunnelId = randomUUID();
    const leftover = record({ target: cfTunnelId });
    const stray = record({ target: cfTunnelId });
    const ended = row(randomUUID(), 'ended', { cfTunnelId, hostname: leftover.name });
    // The row references the record of its hostname; any other name for its tunnel has no row.
    expect(outcomes(plan({ records: [leftover, stray] }, [ended]))).toEqual({ [leftover.id]: 'remove:row_ended', [stray.id]: 'remove:no_row' });
  });

  it('keeps the record of a create in progress: its row has no cf_tunnel_id yet, the tunnel name ties them', () => {
    const rowId = randomUUID();
    const t = tunnel(`${PREFIX}${rowId}`);
    const r = record({ target: t.id });
    const creating = row(rowId, 'creating', { hostname: r.name });
    expect(outcomes(plan({ tunnels: [t], records: [r] }, [creating]))).toEqual({ [t.id]: 'keep:live_row', [r.id]: 'keep:live_row' });
  });
});

describe("the broker's mark on a DNS record", () => {
  it('proves a record pointing at an unknown tunnel is ours: removed when its row ended or never existed', () => {
    const endedRow = row(randomUUID(), 'ended');
    const ofEnded = record({ comment: mark(endedRow.id) });
    const noRowId = randomUUID();
    const ofNoRow = record({ comment: mark(noRowId) });
    const p = plan({ records: [ofEnded, ofNoRow] }, [endedRow]);
    expect(outcomes(p)).toEqual({ [ofEnded.id]: 'remove:row_ended', [ofNoRow.id]: 'remove:no_row' });
    // The report names the row, so an ended one gets the removal in its audit trail.
    expect(p.records.find((c) => c.entry.id === ofEnded.id)?.entry.rowId).toBe(endedRow.id);
    expect(p.records.find((c) => c.entry.id === ofNoRow.id)?.entry.rowId).toBe(noRowId);
  });

  it('keeps a marked record whose row is live, and one younger than the grace', () => {
    const live = row(randomUUID(), 'active');
    const ofLive = record({ comment: mark(live.id) });
    const young = record({ comment: mark(randomUUID()), createdOn: YOUNG });
    expect(outcomes(plan({ records: [ofLive, young] }, [live]))).toEqual({ [ofLive.id]: 'keep:live_row', [young.id]: 'keep:within_grace' });
  });

  it('ignores look-alike marks: another prefix, not a lower-case uuid, extra text, another tool', () => {
    const id = randomUUID();
    const comments = [
      mark(id, 'other-'),
      mark('not-a-uuid'),
      mark(id.toUpperCase()),
      `${mark(id)} `,
      `${mark(id)}x`,
      `tunnel-broker  ${PREFIX}${id}`,
      `${PREFIX}${id}`,
      `other-tool ${PREFIX}${id}`,
      '',
    ];
    const records = comments.map((comment) => record({ comment }));
    expect(Object.values(outcomes(plan({ records })))).toEqual(comments.map(() => 'keep:foreign_tunnel'));
  });

  it('asks for the rows its marks name', () => {
    const rowId = randomUUID();
    const r = record({ comment: mark(rowId) });
    expect(rowKeysFor({ tunnels: [], records: [r] }, OPTIONS).ids).toEqual([rowId]);
  });
});
