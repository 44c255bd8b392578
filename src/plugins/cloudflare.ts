import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { AccessConfig, CloudflareConfig } from '../config/env.js';
import { BudgetGate } from '../cloudflare/budget-gate.js';
import { RequestBudget } from '../cloudflare/request-budget.js';
import { createCloudflareClient } from '../cloudflare/cloudflare-client.js';
import { TunnelProvider, type UpstreamCallObserver } from '../cloudflare/tunnel-provider.js';

declare module 'fastify' {
  interface FastifyInstance {
    tunnelProvider: TunnelProvider;
    /** The Cloudflare request budget this process shares with every other instance through Redis. */
    cloudflareBudget: BudgetGate;
  }
}

export const cloudflarePlugin = fp(
  async (app: FastifyInstance, options: { config: CloudflareConfig; observer?: UpstreamCallObserver; access?: { config: AccessConfig; tunnelDomain: string } }) => {
    const { config } = options;
    const budget = new BudgetGate(new RequestBudget(app.redis, config.budget), { requestTimeoutMs: config.timeoutMs });
    const client = createCloudflareClient(config, { budget });
    app.decorate('cloudflareBudget', budget);
    app.decorate('tunnelProvider', new TunnelProvider(client, config, app.log.child({ component: 'cloudflare' }), { budget, observer: options.observer, ...(options.access ? { access: options.access } : {}) }));
    // Before the reaper's own preClose waits for its sweep: a teardown waiting for the budget
    // gives up rather than hold shutdown past its grace period.
    app.addHook('preClose', async () => budget.close());
  },
  { name: 'cloudflare', fastify: '5.x', dependencies: ['redis'] },
);
