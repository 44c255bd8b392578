import type { CloudflareConfig } from '../config/env.js';
import type { RequestOptions, UpstreamCalls } from './upstream-calls.js';
import { UpstreamError } from './upstream-error.js';

/**
 * Deleting upstream objects by id. Each call is idempotent: an object already gone (404)
 * counts as removed. The caller chooses the budget policy: a teardown waits its turn, the
 * reconciler's housekeeping fails fast.
 */
export class TunnelRemoval {
  readonly #calls: UpstreamCalls;
  readonly #config: CloudflareConfig;

  constructor(calls: UpstreamCalls, config: CloudflareConfig) {
    this.#calls = calls;
    this.#config = config;
  }

  deleteDnsRecord(recordId: string, budget: RequestOptions): Promise<void> {
    return this.#calls.ignoreNotFound(this.#calls.call('dns.delete', () =>
      this.#calls.client.dns.records.delete(recordId, { zone_id: this.#config.zoneId }, budget)));
  }

  /** Disconnects the tunnel's connectors, which Cloudflare requires before deleting it. */
  cleanupConnections(cfTunnelId: string, budget: RequestOptions): Promise<void> {
    return this.#calls.ignoreNotFound(this.#calls.call('tunnel.connections.delete', () =>
      this.#calls.client.zeroTrust.tunnels.cloudflared.connections.delete(cfTunnelId, { account_id: this.#config.accountId }, budget)));
  }

  /** Cleans up the tunnel's connections, then deletes it. */
  async removeTunnel(cfTunnelId: string, budget: RequestOptions): Promise<void> {
    await this.cleanupConnections(cfTunnelId, budget);
    await this.deleteTunnel(cfTunnelId, budget);
  }

  /** Deletes the tunnel; if a connector reconnected since the cleanup, cleans up once more and retries once. */
  async deleteTunnel(cfTunnelId: string, budget: RequestOptions): Promise<void> {
    const remove = () => this.#calls.ignoreNotFound(this.#calls.call('tunnel.delete', () =>
      this.#calls.client.zeroTrust.tunnels.cloudflared.delete(cfTunnelId, { account_id: this.#config.accountId }, budget)));
    try {
      await remove();
    } catch (error) {
      if (!(error instanceof UpstreamError) || error.kind !== 'tunnel_has_connections') throw error;
      await this.cleanupConnections(cfTunnelId, budget);
      await remove();
    }
  }
}
