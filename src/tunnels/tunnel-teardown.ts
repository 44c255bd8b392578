import type { CloudflareAccounts } from '../cloudflare/cloudflare-accounts.js';
import type { GateIds, TunnelAccess } from '../cloudflare/access-gates.js';
import type { Tunnel } from '../generated/prisma/client.js';
import { LeaseLostError, type TunnelLease } from './tunnel-lease.js';
import type { TunnelRows } from './tunnel-rows.js';

/** The ids of what a create made upstream, as far as it got. */
export interface MadeUpstream {
  cfTunnelId?: string | undefined;
  dnsRecordId?: string | undefined;
  /** The tunnel's own Access application and reusable policy (see AccessGates). */
  accessAppId?: string | undefined;
  accessPolicyId?: string | undefined;
  /** A gate create failed in a way that may have made something: the rollback looks by name. */
  gateUncertain?: boolean | undefined;
}

/**
 * Removing a tunnel's upstream objects. There are two ways in, and only two:
 *
 * - `run`: the one teardown, by the holder of the row's lease (a DELETE, a create rolling
 *   itself back, or the reaper that took an abandoned or lapsed tunnel over). Ids the row
 *   lacks are found by their deterministic names, and each id found is saved (fenced by the
 *   lease generation) before anything is deleted, so whoever takes over knows exactly what
 *   exists. The DNS record goes first (with the connectors), the tunnel after it.
 * - `removeMade`: a create whose lease was taken over still removes, by id, exactly what it
 *   made itself. Deletes are idempotent (404 counts as done), so this cannot undo anybody
 *   else's work, and it closes the window in which the new holder's lookups ran before the
 *   create's last call landed.
 */
export class TunnelTeardown {
  readonly #accounts: CloudflareAccounts;
  readonly #rows: TunnelRows;

  constructor(accounts: CloudflareAccounts, rows: TunnelRows) {
    this.#accounts = accounts;
    this.#rows = rows;
  }

  async run(row: Tunnel, lease: TunnelLease): Promise<void> {
    // The row's own account: its token, its request budget, its zone.
    const provider = this.#accounts.forRow(row).provider;
    const { lookups, removal } = provider;
    // One deadline for every request of the teardown, however many it takes.
    const budget = provider.teardownBudget();
    lease.assertHeld();
    let cfTunnelId = row.cfTunnelId;
    if (!cfTunnelId) {
      cfTunnelId = await lookups.findTunnelId(row.id, budget);
      if (cfTunnelId) await this.#save(row.id, lease, { cfTunnelId });
    }
    let dnsRecordIds = row.dnsRecordId ? [row.dnsRecordId] : [];
    if (!row.dnsRecordId && cfTunnelId) {
      // A CNAME to a tunnel only this row has ever had is this row's.
      dnsRecordIds = await lookups.findOurDnsRecordIds(row.hostname, cfTunnelId, budget);
      if (dnsRecordIds[0]) await this.#save(row.id, lease, { dnsRecordId: dnsRecordIds[0] });
    }
    let gate: GateIds = { appId: row.accessAppId ?? undefined, policyId: row.accessPolicyId ?? undefined };
    const access = rowAccess(row);
    if (provider.access.needsOwnApp(access) && (!gate.appId || (access.mode === 'emails' && !gate.policyId))) {
      // Named after the row: found even when the create died before saving their ids.
      const found = await provider.access.findIds(row.id, budget);
      gate = { appId: gate.appId ?? found.appId, policyId: gate.policyId ?? found.policyId };
      if (gate.appId || gate.policyId) await this.#save(row.id, lease, { accessAppId: gate.appId ?? null, accessPolicyId: gate.policyId ?? null });
    }
    lease.assertHeld();
    await Promise.all([
      ...dnsRecordIds.map((id) => removal.deleteDnsRecord(id, budget)),
      cfTunnelId ? removal.cleanupConnections(cfTunnelId, budget) : undefined,
    ]);
    lease.assertHeld();
    // The gate goes only after the DNS record: the hostname never resolves without it.
    await Promise.all([
      cfTunnelId ? removal.deleteTunnel(cfTunnelId, budget) : undefined,
      provider.access.remove(gate, budget),
    ]);
  }

  async removeMade(row: Pick<Tunnel, 'cfAccountId'>, made: MadeUpstream): Promise<void> {
    const provider = this.#accounts.forRow(row).provider;
    const { removal } = provider;
    const budget = provider.teardownBudget();
    if (made.dnsRecordId) await removal.deleteDnsRecord(made.dnsRecordId, budget);
    await Promise.all([
      made.cfTunnelId ? removal.removeTunnel(made.cfTunnelId, budget) : undefined,
      provider.access.remove({ appId: made.accessAppId, policyId: made.accessPolicyId }, budget),
    ]);
  }

  async #save(id: string, lease: TunnelLease, ids: { cfTunnelId?: string; dnsRecordId?: string; accessAppId?: string | null; accessPolicyId?: string | null }): Promise<void> {
    if (!(await this.#rows.saveUpstreamIds(id, lease.generation, ids))) throw new LeaseLostError();
  }
}

/** A row's audience, as AccessGates takes it. */
export function rowAccess(row: Pick<Tunnel, 'accessMode' | 'accessEmails'>): TunnelAccess {
  return row.accessMode === 'emails' ? { mode: 'emails', emails: [...row.accessEmails] } : { mode: row.accessMode };
}
