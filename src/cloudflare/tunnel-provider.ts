import Cloudflare from 'cloudflare';
import type { CloudflareConfig } from '../config/env.js';
import { LogEvent, type Logger } from '../logging/logger.js';
import { translateUpstreamError, UpstreamError } from './upstream-error.js';

export const DEFAULT_CLOUDFLARE_BASE_URL = 'https://api.cloudflare.com/client/v4';
const CFARGOTUNNEL_SUFFIX = '.cfargotunnel.com';

export interface ProvisionedTunnel {
  cfTunnelId: string;
  token: string;
}

/** What the broker knows about a tunnel's upstream resources; any id may be missing after a failure. */
export interface UpstreamTunnelRef {
  rowId: string;
  hostname: string;
  cfTunnelId: string | null;
  dnsRecordId: string | null;
}

/**
 * Builds the SDK client with every setting explicit: the SDK would otherwise read
 * CLOUDFLARE_* variables from the environment behind the config's back, retry
 * creates, and wait 60 s per attempt.
 */
export function createCloudflareClient(config: CloudflareConfig): Cloudflare {
  return new Cloudflare({
    apiToken: config.apiToken,
    apiKey: null,
    apiEmail: null,
    userServiceKey: null,
    baseURL: config.baseUrl ?? DEFAULT_CLOUDFLARE_BASE_URL,
    timeout: config.timeoutMs,
    maxRetries: config.maxRetries,
    // The SDK's own logging can print request details; the broker logs upstream failures itself.
    logLevel: 'off',
  });
}

/**
 * The broker's upstream operations on Cloudflare Tunnels and DNS.
 *
 * Contracts:
 * - Creates (POST) are never retried by the SDK: a repeated POST is not safe to
 *   assume idempotent. Reads, PUTs and deletes use the configured retries.
 * - `teardown` is idempotent: anything already gone (404) counts as removed, and
 *   it finds resources by their deterministic name when an id was never stored.
 * - Every failure surfaces as an UpstreamError.
 */
export class TunnelProvider {
  readonly #client: Cloudflare;
  readonly #config: CloudflareConfig;
  readonly #log: Logger;

  constructor(client: Cloudflare, config: CloudflareConfig, logger: Logger) {
    this.#client = client;
    this.#config = config;
    this.#log = logger;
  }

  /** Upstream tunnel names are `<prefix><row id>`: unique per row, and recognisably ours. */
  tunnelName(rowId: string): string {
    return `${this.#config.tunnelNamePrefix}${rowId}`;
  }

  async createTunnel(rowId: string): Promise<ProvisionedTunnel> {
    const created = await this.#call('tunnel.create', () =>
      this.#client.zeroTrust.tunnels.cloudflared.create(
        { account_id: this.#config.accountId, name: this.tunnelName(rowId), config_src: 'cloudflare' },
        { maxRetries: 0 },
      ),
    );
    if (!created.id) throw new UpstreamError('failed', 'tunnel.create', undefined, [], undefined);
    // The live API returns the connector token on create (untyped in the SDK), which
    // saves a round trip; GET .../token is the fallback.
    const inline = (created as { token?: unknown }).token;
    const token = typeof inline === 'string' && inline.length > 0 ? inline : await this.getToken(created.id);
    return { cfTunnelId: created.id, token };
  }

  async getToken(cfTunnelId: string): Promise<string> {
    const token = await this.#call('tunnel.token', () =>
      this.#client.zeroTrust.tunnels.cloudflared.token.get(cfTunnelId, { account_id: this.#config.accountId }),
    );
    if (typeof token !== 'string' || token.length === 0) throw new UpstreamError('failed', 'tunnel.token', undefined, [], undefined);
    return token;
  }

  async configureIngress(cfTunnelId: string, hostname: string, port: number): Promise<void> {
    await this.#call('tunnel.configuration.put', () =>
      this.#client.zeroTrust.tunnels.cloudflared.configurations.update(cfTunnelId, {
        account_id: this.#config.accountId,
        config: {
          ingress: [
            { hostname, service: `http://localhost:${port}` },
            // cloudflared requires a catch-all last rule: no hostname. The SDK's type insists on
            // one, which the API itself does not.
            { service: 'http_status:404' } as { hostname: string; service: string },
          ],
        },
      }),
    );
  }

  /** A proxied CNAME `<hostname> -> <tunnel id>.cfargotunnel.com`; returns the record id. */
  async createDnsRecord(hostname: string, cfTunnelId: string, rowId: string): Promise<string> {
    const record = await this.#call('dns.create', () =>
      this.#client.dns.records.create(
        {
          zone_id: this.#config.zoneId,
          type: 'CNAME',
          name: hostname,
          content: `${cfTunnelId}${CFARGOTUNNEL_SUFFIX}`,
          proxied: true,
          ttl: 1,
          comment: `tunnel-broker ${this.tunnelName(rowId)}`,
        },
        { maxRetries: 0 },
      ),
    );
    if (!record.id) throw new UpstreamError('failed', 'dns.create', undefined, [], undefined);
    return record.id;
  }

  /** Removes the DNS record, the connectors and the tunnel. Idempotent. */
  async teardown(ref: UpstreamTunnelRef): Promise<void> {
    const cfTunnelId = ref.cfTunnelId ?? (await this.#findTunnelId(ref.rowId));
    await Promise.all([
      this.#deleteDns(ref, cfTunnelId),
      cfTunnelId ? this.#cleanupConnections(cfTunnelId) : undefined,
    ]);
    if (cfTunnelId) await this.#deleteTunnel(cfTunnelId);
  }

  async #deleteDns(ref: UpstreamTunnelRef, cfTunnelId: string | null): Promise<void> {
    if (ref.dnsRecordId) {
      await this.#ignoreNotFound(this.#call('dns.delete', () =>
        this.#client.dns.records.delete(ref.dnsRecordId!, { zone_id: this.#config.zoneId }),
      ));
      return;
    }
    // The id was never stored (the create failed or its response was lost): find the
    // record by name, and delete it only if it points at this very tunnel.
    if (!cfTunnelId) return;
    const target = `${cfTunnelId}${CFARGOTUNNEL_SUFFIX}`;
    const ids: string[] = [];
    await this.#call('dns.list', async () => {
      for await (const record of this.#client.dns.records.list({ zone_id: this.#config.zoneId, type: 'CNAME', name: { exact: ref.hostname } })) {
        if (record.content === target && record.id) ids.push(record.id);
      }
    });
    for (const id of ids) {
      await this.#ignoreNotFound(this.#call('dns.delete', () => this.#client.dns.records.delete(id, { zone_id: this.#config.zoneId })));
    }
  }

  async #cleanupConnections(cfTunnelId: string): Promise<void> {
    await this.#ignoreNotFound(this.#call('tunnel.connections.delete', () =>
      this.#client.zeroTrust.tunnels.cloudflared.connections.delete(cfTunnelId, { account_id: this.#config.accountId }),
    ));
  }

  async #deleteTunnel(cfTunnelId: string): Promise<void> {
    const remove = () => this.#ignoreNotFound(this.#call('tunnel.delete', () =>
      this.#client.zeroTrust.tunnels.cloudflared.delete(cfTunnelId, { account_id: this.#config.accountId }),
    ));
    try {
      await remove();
    } catch (error) {
      // A connector reconnected between the cleanup and the delete: clean up once more.
      if (!(error instanceof UpstreamError) || error.kind !== 'tunnel_has_connections') throw error;
      await this.#cleanupConnections(cfTunnelId);
      await remove();
    }
  }

  async #findTunnelId(rowId: string): Promise<string | null> {
    const name = this.tunnelName(rowId);
    return this.#call('tunnel.list', async () => {
      for await (const tunnel of this.#client.zeroTrust.tunnels.cloudflared.list({ account_id: this.#config.accountId, name, is_deleted: false })) {
        if (tunnel.name === name && tunnel.id && !tunnel.deleted_at) return tunnel.id;
      }
      return null;
    });
  }

  async #ignoreNotFound(promise: Promise<unknown>): Promise<void> {
    try {
      await promise;
    } catch (error) {
      if (error instanceof UpstreamError && error.kind === 'not_found') return;
      throw error;
    }
  }

  async #call<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (error) {
      const upstream = translateUpstreamError(operation, error);
      if (upstream.kind !== 'not_found') {
        this.#log.warn(
          { event: LogEvent.upstreamFailure, operation, kind: upstream.kind, status: upstream.status, cloudflareCodes: upstream.cloudflareCodes },
          upstream.message,
        );
      }
      throw upstream;
    }
  }
}
