import type { CloudflareConfig } from '../config/env.js';
import { CFARGOTUNNEL_SUFFIX, normalizeHost, type RequestOptions, type UpstreamCalls } from './upstream-calls.js';

/** Upstream tunnel names are `<prefix><row id>`: unique per row, and recognisably ours. */
export function tunnelName(config: Pick<CloudflareConfig, 'tunnelNamePrefix'>, rowId: string): string {
  return `${config.tunnelNamePrefix}${rowId}`;
}

/**
 * What the broker writes as the comment of every DNS record it creates, followed by the
 * tunnel's name `<TUNNEL_NAME_PREFIX><row id>`. It proves a record is the broker's even once
 * its tunnel is gone upstream and no row recorded it (the reconciler reads it).
 */
export const DNS_RECORD_MARK = 'tunnel-broker ';

/** The broker's mark on one DNS record: names the tunnel (and so the row) it belongs to. */
export function dnsRecordMark(config: Pick<CloudflareConfig, 'tunnelNamePrefix'>, rowId: string): string {
  return `${DNS_RECORD_MARK}${tunnelName(config, rowId)}`;
}

/**
 * Finding a row's upstream objects by what is deterministic about them, for when an id was
 * never stored (a create's answer was lost, or its broker died): the tunnel by its exact
 * name, and DNS records by hostname that point at that very tunnel.
 */
export class TunnelLookups {
  readonly #calls: UpstreamCalls;
  readonly #config: CloudflareConfig;

  constructor(calls: UpstreamCalls, config: CloudflareConfig) {
    this.#calls = calls;
    this.#config = config;
  }

  /** The id of the tunnel named `<prefix><rowId>` that is not deleted, or null. */
  findTunnelId(rowId: string, budget: RequestOptions): Promise<string | null> {
    const name = tunnelName(this.#config, rowId);
    return this.#calls.call('tunnel.list', async () => {
      for await (const tunnel of this.#calls.client.zeroTrust.tunnels.cloudflared.list({ account_id: this.#config.accountId, name, is_deleted: false }, budget)) {
        if (tunnel.name === name && tunnel.id && !tunnel.deleted_at) return tunnel.id;
      }
      return null;
    });
  }

  /** How many tunnels (not deleted) the account holds, whoever made them; null if Cloudflare does not say. */
  countTunnels(budget: RequestOptions): Promise<number | null> {
    return this.#calls.call('tunnel.list', async () => {
      const page = await this.#calls.client.zeroTrust.tunnels.cloudflared.list({ account_id: this.#config.accountId, is_deleted: false, per_page: 1 }, budget);
      const total = (page.result_info as { total_count?: unknown } | undefined)?.total_count;
      return typeof total === 'number' ? total : null;
    });
  }

  /** CNAMEs named exactly `hostname` that point at this tunnel: the only records that are ours. */
  async findOurDnsRecordIds(hostname: string, cfTunnelId: string, budget: RequestOptions): Promise<string[]> {
    const target = normalizeHost(`${cfTunnelId}${CFARGOTUNNEL_SUFFIX}`);
    const ids: string[] = [];
    await this.#calls.call('dns.list', async () => {
      for await (const record of this.#calls.client.dns.records.list({ zone_id: this.#config.zoneId, type: 'CNAME', name: { exact: hostname } }, budget)) {
        if (record.id && record.type === 'CNAME' && typeof record.content === 'string' && normalizeHost(record.content) === target) ids.push(record.id);
      }
    });
    return ids;
  }
}
