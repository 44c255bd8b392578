import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { AppError } from '../errors/catalogue.js';
import type { Tunnel } from '../generated/prisma/client.js';
import { canonicalCreateRequest, type IdempotencyStore, REPLAYED_HEADER, runIdempotent, type StoredResponse } from './idempotency.js';
import { createTunnelSchema, deleteTunnelSchema, getTunnelSchema, heartbeatSchema, listTunnelsSchema } from './schemas.js';
import type { CreatedTunnel, TunnelService } from './tunnel-service.js';

export interface TunnelRoutesOptions {
  service: TunnelService;
  idempotency: IdempotencyStore;
  heartbeatIntervalSeconds: number;
  createRateLimitPerMinute: number;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A tunnel id that is not even a UUID names no tunnel. */
function requireTunnelId(id: string): string {
  if (!UUID.test(id)) throw new AppError('TUNNEL_NOT_FOUND');
  return id.toLowerCase();
}

function summary(tunnel: Tunnel, expiresAt: Date | null) {
  return {
    id: tunnel.id,
    hostname: tunnel.hostname,
    slug: tunnel.slug,
    port: tunnel.port,
    status: tunnel.status as 'creating' | 'active' | 'ending',
    createdAt: tunnel.createdAt.toISOString(),
    expiresAt: expiresAt?.toISOString() ?? null,
  };
}

function createdBody(created: CreatedTunnel, heartbeatIntervalSec: number) {
  const { tunnel } = created;
  return {
    tunnelId: tunnel.id,
    hostname: tunnel.hostname,
    url: `https://${tunnel.hostname}`,
    slug: tunnel.slug,
    port: tunnel.port,
    cloudflaredToken: created.cloudflaredToken,
    heartbeatIntervalSec,
    expiresAt: created.expiresAt.toISOString(),
    createdAt: tunnel.createdAt.toISOString(),
  };
}

/** /v1/tunnels: every route needs a bearer token. */
export async function tunnelRoutes(app: FastifyInstance, options: TunnelRoutesOptions) {
  const { service } = options;
  const api = app.withTypeProvider<TypeBoxTypeProvider>();
  api.addHook('onRequest', app.authenticate);

  api.post('/', {
    schema: createTunnelSchema,
    config: { rateLimit: { max: options.createRateLimitPerMinute, timeWindow: 60_000 } },
  }, async (request, reply) => {
    const create = async () => createdBody(await service.create(request.userId, request.body, request.log), options.heartbeatIntervalSeconds);
    const key = request.headers['idempotency-key'];
    if (key === undefined) return reply.code(201).send(await create());
    const response = await runIdempotent(
      { store: options.idempotency, scope: { userId: request.userId, key }, canonicalRequest: canonicalCreateRequest(request.body), log: request.log },
      async (): Promise<StoredResponse> => ({ statusCode: 201, body: await create() }),
    );
    if (response.replayed) reply.header(REPLAYED_HEADER, 'true');
    // A replayed 4xx is not one of the typed success statuses. It goes through the same
    // response serializer as the original, so the bytes match.
    const untyped: FastifyReply = reply;
    return untyped.code(response.statusCode).send(response.body);
  });

  api.get('/', { schema: listTunnelsSchema }, async (request) => {
    const views = await service.list(request.userId);
    return { tunnels: views.map((v) => summary(v.tunnel, v.expiresAt)) };
  });

  api.get('/:tunnelId', { schema: getTunnelSchema }, async (request) => {
    const view = await service.get(request.userId, requireTunnelId(request.params.tunnelId));
    return summary(view.tunnel, view.expiresAt);
  });

  // The hot path: successful heartbeats are not access-logged (thousands a second); failures still are.
  api.post('/:tunnelId/heartbeat', { schema: heartbeatSchema, logLevel: 'warn' }, async (request) => {
    const expiresAt = await service.heartbeat(request.userId, requireTunnelId(request.params.tunnelId));
    return { expiresAt: expiresAt.toISOString() };
  });

  api.delete('/:tunnelId', { schema: deleteTunnelSchema }, async (request, reply) => {
    const id = requireTunnelId(request.params.tunnelId);
    await service.delete(request.userId, id, request.log.child({ tunnelId: id }));
    return reply.code(204).send(null);
  });
}
