import { DNS_RECORD_MARK } from '../cloudflare/tunnel-lookups.js';
import type { ListedAccess } from '../cloudflare/access-gates.js';
import type { ListedDnsRecord, ListedTunnel } from '../cloudflare/tunnel-provider.js';
import type { TunnelStatus } from '../generated/prisma/client.js';
import { isLowerCaseUuid, UUID_PATTERN } from '../util/uuid.js';
import type { ReconcileEntry, RemovalReason, SkipReason, SkippedEntry } from './reconcile-report.js';

/**
 * The reconciler's decisions, without I/O: given what upstream listed and the rows that
 * could reference it, what is the broker's, what may go, and why the rest stays.
 *
 * Ownership: a tunnel is the broker's when its name is the prefix followed by a row id (a
 * lower-case UUID, as randomUUID() writes it). A CNAME under the domain pointing at
 * `<uuid>.cfargotunnel.com` is the broker's when that tunnel is (by name upstream, or as a
 * row's cf_tunnel_id), or when the record carries the broker's mark (see DNS_RECORD_MARK).
 * Anything else is at most reported.
 */

const TUNNEL_TARGET_RE = new RegExp(`^(${UUID_PATTERN})\\.cfargotunnel\\.com$`);

export interface PlannerOptions {
  /** TUNNEL_DOMAIN: only CNAMEs under it are considered. */
  tunnelDomain: string;
  /** TUNNEL_NAME_PREFIX: only tunnels named `<prefix><row id>` are the broker's. */
  tunnelNamePrefix: string;
  /** Nothing younger than this is removed: a create may still be writing its row. */
  graceMs: number;
}

export interface UpstreamListing {
  tunnels: readonly ListedTunnel[];
  records: readonly ListedDnsRecord[];
  /** Access applications and reusable policies named with the prefix (absent: not listed). */
  accessApps?: readonly ListedAccess[];
  accessPolicies?: readonly ListedAccess[];
}

/** A row, reduced to what tells whether it references an upstream resource. */
export interface RowRef {
  id: string;
  status: TunnelStatus;
  cfTunnelId: string | null;
  dnsRecordId: string | null;
  hostname: string;
  /** When it ended, if it has. */
  endedAt?: Date | null;
}

/** Which rows a plan needs: every row matching any of these may reference something listed. */
export interface RowKeys {
  ids: string[];
  cfTunnelIds: string[];
  dnsRecordIds: string[];
  /** Matched against rows that are not ended only: ended rows share hostnames with every later tunnel of their slug. */
  liveHostnames: string[];
}

/** What ties an upstream resource to rows; the re-check before a delete reads rows by it. */
export type OwnershipRef =
  | { resource: 'tunnel'; cfTunnelId: string; rowId: string }
  /** An Access application or reusable policy named `<prefix><row id>`: only that row's. */
  | { resource: 'access_app'; id: string; rowId: string; hostname: string | null }
  | { resource: 'access_policy'; id: string; rowId: string; hostname: string | null }
  | {
      resource: 'dns_record';
      recordId: string;
      /** Lower case, no trailing dot. */
      hostname: string;
      /** The tunnel id the record points at, lower case. */
      target: string;
      /** The row id in the name of that tunnel, when it is listed as ours. */
      targetRowId: string | null;
      /** The row id in the broker's mark on the record, when it carries one. */
      markRowId: string | null;
    };

/** Something to remove (after a fresh look at the database). */
export interface Candidate {
  entry: ReconcileEntry;
  reason: RemovalReason;
  ref: OwnershipRef;
}

export interface Plan {
  /** Left alone, with the reason. */
  skipped: SkippedEntry[];
  records: Candidate[];
  tunnels: Candidate[];
  accessApps: Candidate[];
  accessPolicies: Candidate[];
  /** Hostname -> ids of the listed tunnel CNAMEs of ours with that name (an application goes after them). */
  recordsByHostname: Map<string, Set<string>>;
  /** Upstream tunnel id -> ids of the listed tunnel CNAMEs of ours pointing at it. */
  recordsByTarget: Map<string, Set<string>>;
}

interface TunnelRecord {
  record: ListedDnsRecord;
  ref: Extract<OwnershipRef, { resource: 'dns_record' }>;
}

interface SortedListing {
  skipped: SkippedEntry[];
  ownedTunnels: Array<{ tunnel: ListedTunnel; ref: Extract<OwnershipRef, { resource: 'tunnel' }> }>;
  tunnelRecords: TunnelRecord[];
}

/** The rows `plan` must be given for this listing. */
export function rowKeysFor(listing: UpstreamListing, options: PlannerOptions): RowKeys {
  const { ownedTunnels, tunnelRecords } = sortListing(listing, options);
  const markRowIds = tunnelRecords.flatMap((r) => (r.ref.markRowId ? [r.ref.markRowId] : []));
  const accessRowIds = [...ownedAccess(listing.accessApps, 'access_app', options), ...ownedAccess(listing.accessPolicies, 'access_policy', options)].map((a) => a.ref.rowId);
  return {
    ids: [...new Set([...ownedTunnels.map((t) => t.ref.rowId), ...markRowIds, ...accessRowIds])],
    cfTunnelIds: [...new Set([...ownedTunnels.map((t) => t.ref.cfTunnelId), ...tunnelRecords.map((r) => r.ref.target)])],
    dnsRecordIds: tunnelRecords.map((r) => r.record.id),
    liveHostnames: [...new Set(tunnelRecords.map((r) => r.ref.hostname))],
  };
}

/**
 * Sorts the listing into what stays (and why) and what may be removed. `rows` must hold at
 * least the rows matching `rowKeysFor(listing)`; `now` is the clock the grace is judged by.
 */
export function planRemovals(listing: UpstreamListing, rows: readonly RowRef[], now: number, options: PlannerOptions): Plan {
  const { skipped, ownedTunnels, tunnelRecords } = sortListing(listing, options);
  const plan: Plan = { skipped, records: [], tunnels: [], accessApps: [], accessPolicies: [], recordsByTarget: new Map(), recordsByHostname: new Map() };
  const ourTunnelIds = new Set(ownedTunnels.map((t) => t.ref.cfTunnelId));
  const knownCfTunnelIds = new Set(rows.flatMap((r) => (r.cfTunnelId ? [r.cfTunnelId.toLowerCase()] : [])));

  for (const { record, ref } of tunnelRecords) {
    const referencing = referencingRows(ref, rows);
    const entry = recordEntry(record, entryRowId(referencing, ref.markRowId));
    if (!ourTunnelIds.has(ref.target) && !knownCfTunnelIds.has(ref.target) && ref.markRowId === null) {
      skipped.push({ ...entry, reason: 'foreign_tunnel' });
      continue;
    }
    let pointing = plan.recordsByTarget.get(ref.target);
    if (!pointing) plan.recordsByTarget.set(ref.target, (pointing = new Set()));
    pointing.add(record.id);
    let named = plan.recordsByHostname.get(ref.hostname);
    if (!named) plan.recordsByHostname.set(ref.hostname, (named = new Set()));
    named.add(record.id);
    const skip = skipReason(referencing, record.createdOn, now, options.graceMs);
    if (skip) skipped.push({ ...entry, reason: skip });
    else plan.records.push({ entry, reason: referencing.length > 0 ? 'row_ended' : 'no_row', ref });
  }
  for (const { tunnel, ref } of ownedTunnels) {
    const referencing = referencingRows(ref, rows);
    const entry = tunnelEntry(tunnel, ref.rowId);
    const skip = skipReason(referencing, tunnel.createdAt, now, options.graceMs);
    if (skip) skipped.push({ ...entry, reason: skip });
    else plan.tunnels.push({ entry, reason: referencing.length > 0 ? 'row_ended' : 'no_row', ref });
  }
  for (const [listed, resource, into] of [[listing.accessApps, 'access_app', plan.accessApps], [listing.accessPolicies, 'access_policy', plan.accessPolicies]] as const) {
    for (const { object, ref } of ownedAccess(listed, resource, options)) {
      const referencing = referencingRows(ref, rows);
      const entry: ReconcileEntry = { resource, id: object.id, name: object.name, ...(object.domain ? { target: object.domain } : {}), createdAt: object.createdAt, rowId: ref.rowId };
      const skip = skipReason(referencing, object.createdAt, now, options.graceMs);
      if (skip) skipped.push({ ...entry, reason: skip });
      else into.push({ entry, reason: referencing.length > 0 ? 'row_ended' : 'no_row', ref });
    }
  }
  return plan;
}

/**
 * The Access objects that are the broker's: named `<prefix><row id>`, as AccessGates names a
 * tunnel's own. The shared ones (`<prefix>team`, `<prefix>public`) and anything else are
 * never candidates.
 */
function ownedAccess(listed: readonly ListedAccess[] | undefined, resource: 'access_app' | 'access_policy', options: PlannerOptions) {
  const owned: Array<{ object: ListedAccess; ref: Extract<OwnershipRef, { resource: 'access_app' | 'access_policy' }> }> = [];
  for (const object of listed ?? []) {
    const rowId = rowIdFromName(object.name, options.tunnelNamePrefix);
    if (rowId !== null) owned.push({ object, ref: { resource, id: object.id, rowId, hostname: object.domain?.toLowerCase() ?? null } as Extract<OwnershipRef, { resource: 'access_app' | 'access_policy' }> });
  }
  return owned;
}

/** The rows among `rows` that reference the resource. */
export function referencingRows(ref: OwnershipRef, rows: readonly RowRef[]): RowRef[] {
  if (ref.resource === 'tunnel') return rows.filter((r) => r.id === ref.rowId || r.cfTunnelId?.toLowerCase() === ref.cfTunnelId);
  if (ref.resource === 'access_app' || ref.resource === 'access_policy') return rows.filter((r) => r.id === ref.rowId);
  return rows.filter((r) => r.id === ref.markRowId || referencesRecord(r, ref));
}

export function isLive(row: RowRef): boolean {
  return row.status !== 'ended';
}

function sortListing(listing: UpstreamListing, options: PlannerOptions): SortedListing {
  const domain = options.tunnelDomain.toLowerCase();
  const sorted: SortedListing = { skipped: [], ownedTunnels: [], tunnelRecords: [] };
  /** Upstream tunnel id -> the row id its name carries, for tunnels named like ours. */
  const rowIdByCfId = new Map<string, string>();
  for (const tunnel of listing.tunnels) {
    const rowId = rowIdFromName(tunnel.name, options.tunnelNamePrefix);
    if (rowId === null) {
      sorted.skipped.push({ ...tunnelEntry(tunnel, null), reason: 'name_not_ours' });
      continue;
    }
    const cfTunnelId = tunnel.id.toLowerCase();
    sorted.ownedTunnels.push({ tunnel, ref: { resource: 'tunnel', cfTunnelId, rowId } });
    rowIdByCfId.set(cfTunnelId, rowId);
  }
  for (const record of listing.records) {
    const hostname = record.name.toLowerCase().replace(/\.$/, '');
    const target = TUNNEL_TARGET_RE.exec(record.content.toLowerCase().replace(/\.$/, ''))?.[1];
    let reason: SkipReason | undefined;
    // The list's filters are upstream's; ownership is decided here, never by a filter.
    if (record.type !== 'CNAME') reason = 'not_cname';
    else if (!hostname.endsWith(`.${domain}`)) reason = 'outside_domain';
    else if (target === undefined) reason = 'not_a_tunnel_target';
    if (reason !== undefined || target === undefined) {
      sorted.skipped.push({ ...recordEntry(record, null), reason: reason ?? 'not_a_tunnel_target' });
      continue;
    }
    const markRowId = record.comment?.startsWith(DNS_RECORD_MARK)
      ? rowIdFromName(record.comment.slice(DNS_RECORD_MARK.length), options.tunnelNamePrefix)
      : null;
    sorted.tunnelRecords.push({
      record,
      ref: { resource: 'dns_record', recordId: record.id, hostname, target, targetRowId: rowIdByCfId.get(target) ?? null, markRowId },
    });
  }
  return sorted;
}

/** The row id in a name `<prefix><uuid>`, or null: only names the broker itself would make are its own. */
function rowIdFromName(name: string, prefix: string): string | null {
  if (!name.startsWith(prefix)) return null;
  const rest = name.slice(prefix.length);
  // tunnelName() writes randomUUID()'s lower-case form; anything else was made by someone else.
  return isLowerCaseUuid(rest) ? rest : null;
}

/** A row references a record by its stored id, or by hostname and the tunnel it points at. */
function referencesRecord(row: RowRef, ref: Extract<OwnershipRef, { resource: 'dns_record' }>): boolean {
  if (row.dnsRecordId === ref.recordId) return true;
  if (row.hostname.toLowerCase() !== ref.hostname) return false;
  // A row still creating has no cf_tunnel_id yet; the tunnel's name ties the record to it.
  return row.cfTunnelId?.toLowerCase() === ref.target || row.id === ref.targetRowId;
}

function skipReason(referencing: RowRef[], createdAt: string | null, now: number, graceMs: number): SkipReason | undefined {
  if (referencing.some(isLive)) return 'live_row';
  // A row that ended moments ago was torn down by its own teardown, which the listing may
  // predate: deleting now would only repeat that teardown's deletes.
  if (referencing.some((r) => r.endedAt && now - r.endedAt.getTime() < graceMs)) return 'within_grace';
  const created = createdAt === null ? Number.NaN : Date.parse(createdAt);
  if (Number.isNaN(created)) return 'unknown_age';
  // A creation time in the future (clock skew) reads as young, which is the safe side.
  if (now - created < graceMs) return 'within_grace';
  return undefined;
}

/** The row a record entry names: the one its mark names if that row exists, else any referencing row, else the mark's id. */
function entryRowId(referencing: RowRef[], markRowId: string | null): string | null {
  return (referencing.find((r) => r.id === markRowId) ?? referencing[0])?.id ?? markRowId;
}

function tunnelEntry(tunnel: ListedTunnel, rowId: string | null): ReconcileEntry {
  return { resource: 'tunnel', id: tunnel.id, name: tunnel.name, createdAt: tunnel.createdAt, rowId };
}

function recordEntry(record: ListedDnsRecord, rowId: string | null): ReconcileEntry {
  return { resource: 'dns_record', id: record.id, name: record.name, target: record.content, createdAt: record.createdOn, rowId };
}
