import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { CloudflareConfig } from '../config/env.js';
import { createCloudflareClient, TunnelProvider } from '../cloudflare/tunnel-provider.js';

declare module 'fastify' {
  interface FastifyInstance {
    tunnelProvider: TunnelProvider;
  }
}

export const cloudflarePlugin = fp(
  async (app: FastifyInstance, options: { config: CloudflareConfig }) => {
    const client = createCloudflareClient(options.config);
    app.decorate('tunnelProvider', new TunnelProvider(client, options.config, app.log.child({ component: 'cloudflare' })));
  },
  { name: 'cloudflare', fastify: '5.x' },
);
