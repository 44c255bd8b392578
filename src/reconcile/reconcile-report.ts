/** What a reconcile pass reports: what it removed, kept and failed to remove, and why. */

export type ReconcileResource = 'tunnel' | 'dns_record' | 'access_app' | 'access_policy';

/** Why something is (or, in a dry run, would be) removed. */
export type RemovalReason =
  /** No row in the database references it. */
  | 'no_row'
  /** Every row that references it has ended. */
  | 'row_ended';

/** Why something was left alone. */
export type SkipReason =
  /** A row that is not ended references it. */
  | 'live_row'
  /** A row referencing it appeared between the listing and the delete. */
  | 'live_row_on_recheck'
  /** Younger than the grace period. */
  | 'within_grace'
  /** Upstream gave no creation time, so its age cannot be judged. */
  | 'unknown_age'
  /** The name has the prefix but the rest is not a row id, so the broker did not make it. */
  | 'name_not_ours'
  /** A DNS record whose name is not under TUNNEL_DOMAIN. */
  | 'outside_domain'
  /** A DNS record that is not a CNAME. */
  | 'not_cname'
  /** A DNS record whose content is not `<uuid>.cfargotunnel.com`. */
  | 'not_a_tunnel_target'
  /** A DNS record pointing at a tunnel that is not the broker's, and not carrying the broker's mark. */
  | 'foreign_tunnel'
  /** A tunnel that a DNS record still points at, or an Access application whose hostname still has a record: it goes after the record, in a later pass if need be. */
  | 'dns_record_remains'
  /** A reusable policy still attached to an application of ours: it goes after the application. */
  | 'access_app_remains'
  /** An orphan beyond this pass's deletion limit: the next pass takes it. */
  | 'pass_limit'
  /** An orphan not reached because the pass stopped early (see `interruptedBy`). */
  | 'interrupted';

export interface ReconcileEntry {
  resource: ReconcileResource;
  /** Cloudflare's id of the tunnel or DNS record. */
  id: string;
  /** The tunnel's name, or the record's hostname. */
  name: string;
  /** DNS records: the record's content (the CNAME target). */
  target?: string;
  /** As upstream reported it (tunnel created_at, record created_on). */
  createdAt: string | null;
  /** The database row it belongs to, when one is known. */
  rowId: string | null;
}

export interface RemovedEntry extends ReconcileEntry {
  reason: RemovalReason;
}

export interface SkippedEntry extends ReconcileEntry {
  reason: SkipReason;
}

export interface FailedEntry extends ReconcileEntry {
  reason: RemovalReason;
  error: string;
}

export type Interruption = 'stopping' | 'lock_lost' | 'upstream_unavailable' | 'database_unavailable';

export interface ReconcileReport {
  dryRun: boolean;
  /**
   * `completed`: every orphan found was handled (see `failed`). `locked`: another instance
   * holds the reconcile lock, so nothing was listed. `interrupted`: the pass stopped
   * deleting early, for the reason in `interruptedBy`; the next pass continues.
   */
  status: 'completed' | 'locked' | 'interrupted';
  interruptedBy?: Interruption;
  startedAt: string;
  durationMs: number;
  graceSeconds: number;
  /** What the upstream lists returned (tunnels under the prefix; tunnel CNAMEs under the domain). */
  listed: { tunnels: number; dnsRecords: number; accessApps?: number; accessPolicies?: number };
  /** Removed upstream; in a dry run, what a real pass would remove now. */
  removed: RemovedEntry[];
  skipped: SkippedEntry[];
  /** Deletions Cloudflare refused or failed; retried by the next pass. */
  failed: FailedEntry[];
}
