import Type from 'typebox';
import { errorResponses, Timestamp } from '../http/common-schemas.js';
import { IDEMPOTENCY_KEY_PATTERN } from './idempotency.js';
import { REQUESTED_SLUG_PATTERN } from './slug.js';

export const TunnelIdParams = Type.Object({
  // Any string: an id that is not a UUID is simply not found.
  tunnelId: Type.String({ maxLength: 128, description: "The tunnel's id (`tunnelId` in the create response); not its hostname or slug." }),
});

/** GET and DELETE also take a hostname or a slug (src/tunnels/tunnel-ref.ts reads it); the heartbeat takes the id only. */
export const TunnelRefParams = Type.Object({
  tunnelId: Type.String({
    // The router's own limit on a path parameter (maxParamLength in src/app.ts).
    maxLength: 200,
    description:
      "One of the caller's tunnels, named by its id, its hostname (`my-app.<TUNNEL_DOMAIN>`; any case, a trailing dot allowed) " +
      'or its slug (`my-app`). A hostname or slug names a tunnel that has not ended; anything else (another user\'s tunnel, ' +
      'a hostname outside TUNNEL_DOMAIN) is 404 TUNNEL_NOT_FOUND.',
  }),
});

export const AccessSpec = Type.Object(
  {
    mode: Type.Union([Type.Literal('team'), Type.Literal('public'), Type.Literal('emails')], {
      description: '`team`: only the operator\'s team (its identity provider, or a one-time PIN by email); `public`: anyone; `emails`: only the addresses in `emails`.',
    }),
    emails: Type.Optional(Type.Array(Type.String({ minLength: 3, maxLength: 254 }), {
      minItems: 1,
      maxItems: 20,
      description: 'With `emails` only: 1-20 addresses. The owner\'s own address is added when the access token carries an `email` claim.',
    })),
  },
  { additionalProperties: false, description: 'Who may open the URL (Cloudflare Access). Without it, the operator\'s default (ACCESS_DEFAULT_MODE).' },
);

export const CreateTunnelBody = Type.Object(
  {
    port: Type.Number({ description: 'The local port to expose: an integer from 1 to 65535.' }),
    requestedSlug: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 63,
        pattern: REQUESTED_SLUG_PATTERN,
        description: 'Subdomain to use (lower-cased). Random when omitted.',
      }),
    ),
    access: Type.Optional(AccessSpec),
  },
  // Unknown fields are ignored (and stripped), so newer clients work with older brokers.
  { additionalProperties: true },
);

export const CreateTunnelHeaders = Type.Object({
  'idempotency-key': Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 255,
      pattern: IDEMPOTENCY_KEY_PATTERN,
      description:
        'Optional, 1-255 printable ASCII characters. For IDEMPOTENCY_TTL_SECONDS (24 h by default) the same user and key replay ' +
        'the first response (201, or a 4xx other than 401, 409 and 429), token included, with `Idempotent-Replayed: true`; the same ' +
        'key with a different request is 422 IDEMPOTENCY_KEY_REUSED, and while the first request runs, 409 IDEMPOTENCY_KEY_IN_USE.',
    }),
  ),
});

const TunnelStatus = Type.Union([Type.Literal('creating'), Type.Literal('active'), Type.Literal('ending')]);

export const CreatedTunnel = Type.Object({
  tunnelId: Type.String({ format: 'uuid' }),
  hostname: Type.String(),
  url: Type.String({ description: 'https://<hostname>' }),
  slug: Type.String(),
  port: Type.Integer(),
  cloudflaredToken: Type.String({ description: 'Run `cloudflared tunnel run --token <this>`. Returned only here, once.' }),
  heartbeatToken: Type.String({
    description:
      'A bearer token that can only heartbeat this tunnel (POST /v1/tunnels/{id}/heartbeat; 403 anywhere else), so an agent ' +
      'need not keep the user\'s access token. Valid for 30 days and renewed by the heartbeat response before then; useless ' +
      'once the tunnel has ended. Returned only here (and in an idempotent replay).',
  }),
  heartbeatIntervalSec: Type.Integer(),
  expiresAt: Timestamp,
  createdAt: Timestamp,
  // Optional only so that an Idempotency-Key replay of a response stored before Access still serializes.
  access: Type.Optional(AccessSpec),
});

export const TunnelSummary = Type.Object({
  id: Type.String({ format: 'uuid' }),
  hostname: Type.String(),
  slug: Type.String(),
  port: Type.Integer(),
  status: TunnelStatus,
  createdAt: Timestamp,
  expiresAt: Type.Union([Timestamp, Type.Null()]),
  access: AccessSpec,
});

export const TunnelList = Type.Object({ tunnels: Type.Array(TunnelSummary) });

export const TunnelEventType = Type.Union([
  Type.Literal('created'), Type.Literal('create_failed'), Type.Literal('heartbeat_lapsed'), Type.Literal('delete_requested'),
  Type.Literal('ended'), Type.Literal('end_failed'), Type.Literal('orphan_removed'), Type.Literal('access_changed'),
]);

export const TunnelEventView = Type.Object({
  type: TunnelEventType,
  actor: Type.String({ description: '`user:<id>`, `operator:<name>`, `reaper`, `reconciler` or `system`.' }),
  at: Timestamp,
  details: Type.Object({}, { additionalProperties: true, description: 'Why: the end reason, the upstream failure (operation, kind, status, codes).' }),
});

export const GetTunnelQuery = Type.Object({
  include: Type.Optional(Type.Literal('events', { description: '`events` adds the tunnel\'s audit trail (its latest 100 events, oldest first).' })),
});

export const TunnelDetail = Type.Object({
  ...TunnelSummary.properties,
  events: Type.Optional(Type.Array(TunnelEventView, { description: 'With `?include=events` only.' })),
});

export const HeartbeatResponse = Type.Object({
  // Clients written against the published API (rs-tunnel's CLI) require it.
  ok: Type.Literal(true),
  expiresAt: Timestamp,
  heartbeatToken: Type.Optional(Type.String({
    description: 'Present when the request used a heartbeat token with less than 10 days left: its replacement, to use from now on.',
  })),
});

export const createTunnelSchema = {
  operationId: 'createTunnel',
  summary: 'Create a tunnel',
  headers: CreateTunnelHeaders,
  body: CreateTunnelBody,
  response: {
    201: CreatedTunnel,
    ...errorResponses([
      'INVALID_INPUT', 'INVALID_PORT', 'UNAUTHORIZED', 'FORBIDDEN', 'ACCESS_PUBLIC_FORBIDDEN', 'TUNNEL_SLUG_CONFLICT', 'TUNNEL_DELETED_DURING_CREATE', 'IDEMPOTENCY_KEY_IN_USE', 'PAYLOAD_TOO_LARGE',
      'UNSUPPORTED_MEDIA_TYPE', 'IDEMPOTENCY_KEY_REUSED', 'TUNNEL_LIMIT_EXCEEDED', 'RATE_LIMITED', 'UPSTREAM_ERROR',
      'UPSTREAM_UNAVAILABLE', 'TUNNEL_CAPACITY_EXHAUSTED', 'SLUG_EXHAUSTED', 'SERVICE_UNAVAILABLE',
    ]),
  },
};

export const listTunnelsSchema = {
  operationId: 'listTunnels',
  summary: "List the caller's tunnels that are not ended",
  response: { 200: TunnelList, ...errorResponses(['UNAUTHORIZED', 'FORBIDDEN', 'RATE_LIMITED', 'SERVICE_UNAVAILABLE']) },
};

export const getTunnelSchema = {
  operationId: 'getTunnel',
  summary: 'Get one of the caller\'s tunnels',
  params: TunnelRefParams,
  querystring: GetTunnelQuery,
  response: { 200: TunnelDetail, ...errorResponses(['INVALID_INPUT', 'UNAUTHORIZED', 'FORBIDDEN', 'TUNNEL_NOT_FOUND', 'RATE_LIMITED', 'SERVICE_UNAVAILABLE']) },
};

export const heartbeatSchema = {
  operationId: 'sendHeartbeat',
  summary: 'Keep a tunnel alive',
  params: TunnelIdParams,
  response: { 200: HeartbeatResponse, ...errorResponses(['UNAUTHORIZED', 'FORBIDDEN', 'TUNNEL_NOT_FOUND', 'SERVICE_UNAVAILABLE']) },
};

export const UpdateTunnelBody = Type.Object({ access: AccessSpec }, { additionalProperties: false });

export const updateTunnelSchema = {
  operationId: 'updateTunnel',
  summary: 'Change who may open a live tunnel\'s URL, in place (same hostname)',
  description: 'Owner only. One change at a time per tunnel: a concurrent one is 503 SERVICE_UNAVAILABLE with Retry-After.',
  params: TunnelRefParams,
  body: UpdateTunnelBody,
  response: {
    200: TunnelSummary,
    ...errorResponses([
      'INVALID_INPUT', 'UNAUTHORIZED', 'FORBIDDEN', 'ACCESS_PUBLIC_FORBIDDEN', 'TUNNEL_NOT_FOUND', 'PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE',
      'RATE_LIMITED', 'UPSTREAM_ERROR', 'UPSTREAM_UNAVAILABLE', 'SERVICE_UNAVAILABLE',
    ]),
  },
};

export const deleteTunnelSchema = {
  operationId: 'deleteTunnel',
  summary: 'End a tunnel (idempotent)',
  params: TunnelRefParams,
  response: {
    204: Type.Null({ description: 'Ended' }),
    ...errorResponses(['UNAUTHORIZED', 'FORBIDDEN', 'TUNNEL_NOT_FOUND', 'RATE_LIMITED', 'UPSTREAM_ERROR', 'UPSTREAM_UNAVAILABLE', 'SERVICE_UNAVAILABLE']),
  },
};
