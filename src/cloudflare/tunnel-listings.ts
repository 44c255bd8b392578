import type { CloudflareConfig } from '../config/env.js';
import { CFARGOTUNNEL_SUFFIX, type UpstreamCalls } from './upstream-calls.js';
import { UpstreamError } from './upstream-error.js';

/** Cloudflare's largest page for cfd_tunnel lists; DNS accepts it too. */
const LIST_PER_PAGE = 1000;
/** Far above an account's 1000 tunnels or a zone's records; only a broken paginator gets here. */
const MAX_LISTED_ITEMS = 100_000;

/** A tunnel as a list shows it. */
export interface ListedTunnel {
  id: string;
  name: string;
  /** ISO 8601, as upstream reported it; null if it did not. */
  createdAt: string | null;
}

/** A DNS record as a list shows it. */
export interface ListedDnsRecord {
  id: string;
  name: string;
  type: string;
  content: string;
  /** ISO 8601, as upstream reported it; null if it did not. */
  createdOn: string | null;
  /** The record's comment (createDnsRecord writes `tunnel-broker <tunnel name>`); null if none. */
  comment: string | null;
}

/**
 * Whole listings of what the broker may own upstream, for the reconciler and operators.
 * Housekeeping: when the request budget is spent they fail at once (`rate_limited`) rather
 * than wait, and they never use the share of the budget kept for teardowns.
 */
export class TunnelListings {
  readonly #calls: UpstreamCalls;
  readonly #config: CloudflareConfig;

  constructor(calls: UpstreamCalls, config: CloudflareConfig) {
    this.#calls = calls;
    this.#config = config;
  }

  /**
   * Every tunnel not deleted whose name starts with the prefix, every page of it. The
   * filter is upstream's; callers still check each name, since a prefix match alone does
   * not make a tunnel ours.
   */
  async listTunnelsUnderPrefix(options: { perPage?: number } = {}): Promise<ListedTunnel[]> {
    const tunnels = new Map<string, ListedTunnel>();
    await this.#calls.call('tunnel.list', async () => {
      let seen = 0;
      const pages = this.#calls.client.zeroTrust.tunnels.cloudflared.list({
        account_id: this.#config.accountId,
        include_prefix: this.#config.tunnelNamePrefix,
        is_deleted: false,
        per_page: options.perPage ?? LIST_PER_PAGE,
      }, this.#calls.budgetOptions('fail'));
      for await (const tunnel of pages) {
        this.#checkListBound('tunnel.list', ++seen);
        if (!tunnel.id || typeof tunnel.name !== 'string' || tunnel.deleted_at) continue;
        // Pages shift when tunnels are deleted mid-listing; the id keeps each one once.
        tunnels.set(tunnel.id, { id: tunnel.id, name: tunnel.name, createdAt: tunnel.created_at ?? null });
      }
    });
    return [...tunnels.values()];
  }

  /** CNAMEs under `.<domain>` whose content ends in .cfargotunnel.com, every page of them. */
  async listTunnelDnsRecords(domain: string, options: { perPage?: number } = {}): Promise<ListedDnsRecord[]> {
    const records = new Map<string, ListedDnsRecord>();
    await this.#calls.call('dns.list', async () => {
      let seen = 0;
      const pages = this.#calls.client.dns.records.list({
        zone_id: this.#config.zoneId,
        type: 'CNAME',
        name: { endswith: `.${domain}` },
        content: { endswith: CFARGOTUNNEL_SUFFIX },
        per_page: options.perPage ?? LIST_PER_PAGE,
      }, this.#calls.budgetOptions('fail'));
      for await (const record of pages) {
        this.#checkListBound('dns.list', ++seen);
        if (!record.id || typeof record.name !== 'string') continue;
        records.set(record.id, {
          id: record.id,
          name: record.name,
          type: record.type,
          content: typeof record.content === 'string' ? record.content : '',
          createdOn: record.created_on ?? null,
          comment: typeof record.comment === 'string' && record.comment !== '' ? record.comment : null,
        });
      }
    });
    return [...records.values()];
  }

  /** An API that ignored `page` would repeat one page forever; a listing this long is refused instead. */
  #checkListBound(operation: string, seen: number): void {
    if (seen > MAX_LISTED_ITEMS) {
      throw new UpstreamError('failed', operation, undefined, [], undefined, {
        cause: new Error(`more than ${MAX_LISTED_ITEMS} items listed; pagination is not advancing`),
      });
    }
  }
}
