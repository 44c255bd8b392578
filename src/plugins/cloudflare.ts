import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { AccessConfig, CloudflareConfig } from '../config/env.js';
import type { BudgetGate } from '../cloudflare/budget-gate.js';
import { CloudflareAccounts } from '../cloudflare/cloudflare-accounts.js';
import type { TunnelProvider, UpstreamCallObserver } from '../cloudflare/tunnel-provider.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Every Cloudflare account, each with its own client, request budget and provider. */
    cloudflareAccounts: CloudflareAccounts;
    /** The primary account's provider (single-account tools and tests). */
    tunnelProvider: TunnelProvider;
    /** The primary account's request budget, shared with every other instance through Redis. */
    cloudflareBudget: BudgetGate;
  }
}

export const cloudflarePlugin = fp(
  async (app: FastifyInstance, options: { config: CloudflareConfig; observer?: UpstreamCallObserver; access?: { config: AccessConfig } }) => {
    const accounts = CloudflareAccounts.build({
      config: options.config,
      redis: app.redis,
      logger: app.log.child({ component: 'cloudflare' }),
      observer: options.observer,
      access: options.access,
    });
    app.decorate('cloudflareAccounts', accounts);
    app.decorate('cloudflareBudget', accounts.primary.budget);
    app.decorate('tunnelProvider', accounts.primary.provider);
    // Before the reaper's own preClose waits for its sweep: a teardown waiting for a budget
    // gives up rather than hold shutdown past its grace period.
    app.addHook('preClose', async () => accounts.close());
  },
  { name: 'cloudflare', fastify: '5.x', dependencies: ['redis'] },
);
