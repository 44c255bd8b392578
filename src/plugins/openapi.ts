import { readFileSync } from 'node:fs';
import { STATUS_CODES } from 'node:http';
import fastifySwagger from '@fastify/swagger';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { ERROR_CATALOGUE, ERROR_CODES } from '../errors/catalogue.js';
import { REPLAYED_HEADER } from '../tunnels/idempotency.js';
import { registerDocsRoutes } from './docs-ui.js';

/**
 * Names a route schema can use in `security` to override the defaults that `defaultSecurity`
 * gives by path.
 */
export const SECURITY_SCHEMES = {
  bearerAuth: {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description: "An access token: HS256 signed with JWT_SECRET (`npm run token -- <user>`), or the identity provider's RS256/ES256 token when configured.",
  },
  heartbeatToken: {
    type: 'http',
    scheme: 'bearer',
    description: 'The `heartbeatToken` from the create response: it can heartbeat that one tunnel and nothing else.',
  },
  metricsToken: {
    type: 'http',
    scheme: 'bearer',
    description: 'METRICS_TOKEN, when the broker has one set.',
  },
} as const;

/** Error codes whose responses carry Retry-After (see where each AppError sets retryAfterSec). */
const RETRY_AFTER_CODES: ReadonlySet<string> = new Set(['RATE_LIMITED', 'UPSTREAM_UNAVAILABLE', 'IDEMPOTENCY_KEY_IN_USE', 'SERVICE_UNAVAILABLE', 'TUNNEL_CAPACITY_EXHAUSTED']);

export const DOCS_PREFIX = '/docs';

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

const API_DESCRIPTION = [
  'Creates Cloudflare Tunnels on demand and removes them when their agent stops heartbeating.',
  '',
  'Every error is JSON `{"code", "message", "details"?}`; each operation lists the codes it can answer with, per status.',
  'Unknown routes answer `NOT_FOUND`, and any route may answer `INTERNAL_ERROR`. All codes:',
  '',
  '| code | status | meaning |',
  '| --- | --- | --- |',
  ...ERROR_CODES.map((code) => `| \`${code}\` | ${ERROR_CATALOGUE[code].status} | ${ERROR_CATALOGUE[code].message} |`),
].join('\n');

type Security = Array<Record<string, string[]>>;

/** By path, for routes whose schema names none: /v1 needs an access token, /metrics maybe METRICS_TOKEN, the rest nothing. */
function defaultSecurity(url: string, acceptsHeartbeatToken: boolean): Security {
  if (url.startsWith('/v1/')) return acceptsHeartbeatToken ? [{ bearerAuth: [] }, { heartbeatToken: [] }] : [{ bearerAuth: [] }];
  // `{}` makes it optional: only a broker with METRICS_TOKEN set asks for it.
  if (url === '/metrics') return [{ metricsToken: [] }, {}];
  return [];
}

interface OpenApiResponse {
  description?: string;
  headers?: Record<string, unknown>;
  content?: Record<string, { schema?: { properties?: { code?: { enum?: unknown[] } } } }>;
}
interface OpenApiOperation {
  parameters?: Array<{ in?: string; name?: string }>;
  responses?: Record<string, OpenApiResponse>;
}

/**
 * Response headers that come from the error handler and idempotency layer rather than the
 * route schemas, and a status text where a success schema gave no description.
 */
function documentResponses(document: { paths?: Record<string, Record<string, OpenApiOperation>> }): void {
  for (const item of Object.values(document.paths ?? {})) {
    for (const operation of Object.values(item)) {
      const idempotent = operation.parameters?.some((p) => p.in === 'header' && p.name === 'idempotency-key') ?? false;
      for (const [status, response] of Object.entries(operation.responses ?? {})) {
        if (response.description === 'Default Response') response.description = STATUS_CODES[Number(status)] ?? response.description;
        const codes = response.content?.['application/json']?.schema?.properties?.code?.enum ?? [];
        const retryCodes = codes.filter((c): c is string => typeof c === 'string' && RETRY_AFTER_CODES.has(c));
        if (retryCodes.length > 0) {
          response.headers = {
            ...response.headers,
            'Retry-After': { description: `Seconds to wait before retrying, with ${retryCodes.join(', ')} (when the broker can tell).`, schema: { type: 'integer', minimum: 1 } },
          };
        }
        // What a replay can answer with (README, Idempotency-Key): the 201, and a 400 that depends only on the request.
        if (idempotent && (status === '201' || status === '400')) {
          response.headers = {
            ...response.headers,
            [REPLAYED_HEADER]: { description: '`true` when this is the stored response to an earlier request with the same Idempotency-Key.', schema: { type: 'string', enum: ['true'] } },
          };
        }
      }
    }
  }
}

/**
 * TypeBox writes a union of literals as `anyOf` of one-value schemas (`const`, which
 * @fastify/swagger turns into one-value `enum`s). One `enum` says the same, and is what
 * OpenAPI tools and code generators understand as an enumeration.
 */
function collapseLiteralUnions(node: unknown): void {
  if (typeof node !== 'object' || node === null) return;
  if (Array.isArray(node)) {
    for (const item of node) collapseLiteralUnions(item);
    return;
  }
  const schema = node as Record<string, unknown>;
  for (const value of Object.values(schema)) collapseLiteralUnions(value);
  const members = schema.anyOf;
  if (!Array.isArray(members) || members.length === 0 || 'type' in schema || 'enum' in schema) return;
  const literal = (m: unknown): m is { type: string; enum: [unknown] } =>
    typeof m === 'object' && m !== null && Object.keys(m).every((k) => k === 'type' || k === 'enum')
    && typeof (m as { type?: unknown }).type === 'string' && Array.isArray((m as { enum?: unknown }).enum) && (m as { enum: unknown[] }).enum.length === 1;
  if (!members.every(literal)) return;
  const type = members[0]!.type;
  if (!members.every((m) => m.type === type)) return;
  delete schema.anyOf;
  schema.type = type;
  schema.enum = members.map((m) => m.enum[0]);
}

/**
 * The OpenAPI 3 document, generated from the route schemas (@fastify/swagger), at
 * /docs/json and /docs/yaml, and Swagger UI at /docs, loaded on first use (its assets ship in
 * the npm package, so it works offline; see docs-ui.ts). Must be registered before any route: the document is built from the
 * routes it sees being added.
 */
export const openapiPlugin = fp(
  async (app: FastifyInstance) => {
    await app.register(fastifySwagger, {
      openapi: {
        openapi: '3.0.3',
        info: { title: 'tunnel-broker', version: packageVersion(), description: API_DESCRIPTION },
        tags: [
          { name: 'tunnels', description: "A developer's tunnels (bearer access token)." },
          { name: 'operations', description: 'Health, readiness and metrics, for operators and orchestrators.' },
        ],
        // Relative: the broker that serves this document (GET /docs/json) is the one it describes.
        servers: [{ url: '/', description: 'This broker: the origin that serves this document.' }],
        // Only what operations reference: each error response lists its own codes, and the
        // description above has the full table.
        components: { securitySchemes: SECURITY_SCHEMES },
      },
      transform: ({ schema, url, route }) => {
        // A prefix's own `/` route (POST /v1/tunnels/) also answers without the slash, which is
        // how clients call it: document it that way.
        if (url.length > 1 && url.endsWith('/')) url = url.slice(0, -1);
        const tags = schema?.tags ?? [url.startsWith('/v1/') ? 'tunnels' : 'operations'];
        const security = (schema as { security?: Security } | undefined)?.security
          ?? defaultSecurity(url, route.config?.heartbeatTokenParam !== undefined);
        return { schema: { ...schema, tags, security } as typeof schema, url };
      },
      transformObject: (documentObject) => {
        const document = 'openapiObject' in documentObject ? documentObject.openapiObject : documentObject.swaggerObject;
        collapseLiteralUnions(document.paths);
        documentResponses(document as Parameters<typeof documentResponses>[0]);
        return document;
      },
    });
    registerDocsRoutes(app, DOCS_PREFIX);
  },
  { name: 'openapi', fastify: '5.x' },
);
