import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { HeartbeatTokens } from '../auth/heartbeat-token.js';
import { AppError } from '../errors/catalogue.js';
import { perUserRateLimit } from '../plugins/rate-limit.js';
import type { Tunnel } from '../generated/prisma/client.js';
import { isUuid } from '../util/uuid.js';
import { canonicalCreateRequest, type IdempotencyStore, REPLAYED_HEADER, runIdempotent, type StoredResponse } from './idempotency.js';
import { toEventView } from './tunnel-events.js';
import { createTunnelSchema, deleteTunnelSchema, getTunnelSchema, heartbeatSchema, listTunnelsSchema, updateTunnelSchema } from './schemas.js';
import { accessView } from './tunnel-access.js';
import type { TunnelRefResolver } from './tunnel-ref-resolver.js';
import type { CreatedTunnel, TunnelService } from './tunnel-service.js';

export interface TunnelRoutesOptions {
  service: TunnelService;
  idempotency: IdempotencyStore;
  heartbeatIntervalSeconds: number;
  /** Per user and minute, each route counted on its own (see perUserRateLimit). */
  rateLimits: { createPerMinute: number; readPerMinute: number; deletePerMinute: number };
  heartbeatTokens: HeartbeatTokens;
  /** GET and DELETE take the tunnel's id, hostname or slug. */
  tunnelRefs: TunnelRefResolver;
}

/** A tunnel id that is not even a UUID names no tunnel. */
function requireTunnelId(id: string): string {
  if (!isUuid(id)) throw new AppError('TUNNEL_NOT_FOUND');
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
    access: accessView(tunnel),
  };
}

function createdBody(created: CreatedTunnel, heartbeatIntervalSec: number, heartbeatTokens: HeartbeatTokens) {
  const { tunnel } = created;
  return {
    tunnelId: tunnel.id,
    hostname: tunnel.hostname,
    url: `https://${tunnel.hostname}`,
    slug: tunnel.slug,
    port: tunnel.port,
    cloudflaredToken: created.cloudflaredToken,
    heartbeatToken: heartbeatTokens.sign(tunnel.ownerId, tunnel.id),
    heartbeatIntervalSec,
    expiresAt: created.expiresAt.toISOString(),
    createdAt: tunnel.createdAt.toISOString(),
    access: accessView(tunnel),
  };
}

/**
 * /v1/tunnels: every route needs a bearer token, and every route but the heartbeat has a
 * per-user rate limit (a test fails for a route that forgets one).
 */
export async function tunnelRoutes(app: FastifyInstance, options: TunnelRoutesOptions) {
  const { service } = options;
  const api = app.withTypeProvider<TypeBoxTypeProvider>();
  api.addHook('onRequest', app.authenticate);

  api.post('/', {
    schema: createTunnelSchema,
    config: { rateLimit: perUserRateLimit('create', options.rateLimits.createPerMinute), metric: 'tunnel_create' },
  }, async (request, reply) => {
    const create = async () => createdBody(await service.create(request.userId, request.body, request.log, { ownerEmail: request.userEmail }), options.heartbeatIntervalSeconds, options.heartbeatTokens);
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

  api.get('/', { schema: listTunnelsSchema, config: { rateLimit: perUserRateLimit('read', options.rateLimits.readPerMinute) } }, async (request) => {
    const views = await service.list(request.userId);
    return { tunnels: views.map((v) => summary(v.tunnel, v.expiresAt)) };
  });

  api.get('/:tunnelId', { schema: getTunnelSchema, config: { rateLimit: perUserRateLimit('read', options.rateLimits.readPerMinute) } }, async (request) => {
    const view = await service.get(request.userId, await options.tunnelRefs.resolve(request.userId, request.params.tunnelId));
    const body = summary(view.tunnel, view.expiresAt);
    // After get(): only the owner of a live tunnel reaches its history.
    if (request.query.include !== 'events') return body;
    return { ...body, events: (await service.events(view.tunnel.id)).map(toEventView) };
  });

  // The hot path: successful heartbeats are not access-logged (thousands a second); failures still are.
  // A heartbeat token for this very tunnel is accepted here, and nowhere else.
  // No @fastify/rate-limit here, deliberately: a heartbeat is exactly one Redis call, and its
  // bound per tunnel is kept by the heartbeat script itself (HeartbeatStore).
  api.post('/:tunnelId/heartbeat', { schema: heartbeatSchema, logLevel: 'warn', config: { heartbeatTokenParam: 'tunnelId', metric: 'heartbeat' } }, async (request) => {
    const tunnelId = requireTunnelId(request.params.tunnelId);
    const expiresAt = await service.heartbeat(request.userId, tunnelId);
    const grant = request.heartbeatGrant;
    // Only after the tunnel proved alive: an agent that outlives its token's expiry gets a new one.
    if (grant && options.heartbeatTokens.shouldRenew(grant)) {
      return { ok: true as const, expiresAt: expiresAt.toISOString(), heartbeatToken: options.heartbeatTokens.sign(request.userId, tunnelId) };
    }
    return { ok: true as const, expiresAt: expiresAt.toISOString() };
  });

  // Changes who may open the URL; a change is as rare as a delete, and counts at that rate.
  api.patch('/:tunnelId', { schema: updateTunnelSchema, config: { rateLimit: perUserRateLimit('update', options.rateLimits.deletePerMinute) } }, async (request) => {
    const id = await options.tunnelRefs.resolve(request.userId, request.params.tunnelId);
    const view = await service.changeAccess(request.userId, id, request.body.access, request.log.child({ tunnelId: id }), { ownerEmail: request.userEmail });
    return summary(view.tunnel, view.expiresAt);
  });

  api.delete('/:tunnelId', { schema: deleteTunnelSchema, config: { rateLimit: perUserRateLimit('delete', options.rateLimits.deletePerMinute) } }, async (request, reply) => {
    const id = await options.tunnelRefs.resolve(request.userId, request.params.tunnelId);
    await service.delete(request.userId, id, request.log.child({ tunnelId: id }));
    return reply.code(204).send(null);
  });
}
