import type { CloudflareSdk } from './cloudflare-sdk.js';
import type { AccessConfig, CloudflareConfig } from '../config/env.js';
import { AccessGates } from './access-gates.js';
import type { Logger } from '../logging/logger.js';
import type { BudgetGate } from './budget-gate.js';
import { TunnelCreation } from './tunnel-creation.js';
import { TunnelListings } from './tunnel-listings.js';
import { TunnelLookups, tunnelName } from './tunnel-lookups.js';
import { TunnelRemoval } from './tunnel-removal.js';
import { UpstreamCalls, type RequestOptions, type UpstreamCallObserver } from './upstream-calls.js';

export type { ProvisionedTunnel } from './tunnel-creation.js';
export type { ListedDnsRecord, ListedTunnel } from './tunnel-listings.js';
export type { UpstreamCallObserver } from './upstream-calls.js';
export type { GateIds, TunnelAccess } from './access-gates.js';

/** No team rule, public by default: no Access object is ever made (the broker before Access). */
const NO_ACCESS: AccessConfig = { teamEmailDomains: [], teamEmails: [], defaultMode: 'public', allowPublic: true, sessionDuration: '24h' };

/**
 * The broker's upstream operations on Cloudflare Tunnels and DNS for one account, by job:
 * `creation` (create with adopt-on-conflict), `lookups` (finding objects by their
 * deterministic names), `removal` (idempotent deletes by id) and `listings` (whole
 * listings for the reconciler). They share one SDK client, the request budget, and one
 * place where failures are translated, logged and measured (UpstreamCalls).
 *
 * Budget policies: the create path fails fast when the shared budget is spent; a teardown
 * waits its turn (bounded), since it frees quota and slugs; housekeeping fails fast.
 */
export class TunnelProvider {
  readonly creation: TunnelCreation;
  readonly lookups: TunnelLookups;
  readonly removal: TunnelRemoval;
  readonly listings: TunnelListings;
  /** Cloudflare Access in front of tunnel hostnames. */
  readonly access: AccessGates;
  readonly #calls: UpstreamCalls;
  readonly #config: CloudflareConfig;

  /** `budget` must be the gate the client was built with; without one no policy applies. */
  constructor(client: CloudflareSdk, config: CloudflareConfig, logger: Logger, options: { budget?: BudgetGate; observer?: UpstreamCallObserver; access?: { config: AccessConfig; tunnelDomain: string } } = {}) {
    this.#config = config;
    this.#calls = new UpstreamCalls(client, logger, options);
    this.lookups = new TunnelLookups(this.#calls, config);
    this.creation = new TunnelCreation(this.#calls, this.lookups, config);
    this.removal = new TunnelRemoval(this.#calls, config);
    this.listings = new TunnelListings(this.#calls, config);
    this.access = new AccessGates(this.#calls, this.creation, config, options.access?.config ?? NO_ACCESS, options.access?.tunnelDomain ?? 'invalid');
  }

  tunnelName(rowId: string): string {
    return tunnelName(this.#config, rowId);
  }

  /** SDK options for one teardown: every request waits its turn in the budget, under one deadline. */
  teardownBudget(): RequestOptions {
    return this.#calls.budgetOptions('wait');
  }

  /** SDK options for housekeeping (the reconciler): fail fast when the budget is spent. */
  housekeepingBudget(): RequestOptions {
    return this.#calls.budgetOptions('fail');
  }
}
