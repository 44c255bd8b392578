import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Value from 'typebox/value';
import { ERROR_CATALOGUE, ERROR_CODES } from '../../src/errors/catalogue.js';
import { HeartbeatResponse } from '../../src/tunnels/schemas.js';
import { startTestBroker, type TestBroker } from '../helpers/broker.js';
import { appRoutes } from '../helpers/routes.js';

/**
 * The OpenAPI document at /docs/json: structurally valid OpenAPI 3.0, complete (every route,
 * status and error code the app has), rendered cleanly from TypeBox, and in agreement with
 * POST /v1/tunnels as the seed API spec describes it.
 */

type Json = Record<string, unknown>;
interface Operation {
  operationId?: string;
  summary?: string;
  tags?: string[];
  security?: Array<Record<string, string[]>>;
  parameters?: Array<{ in: string; name: string; required?: boolean; schema?: Json }>;
  requestBody?: { required?: boolean; content: Record<string, { schema: SchemaObject }> };
  responses: Record<string, { description: string; content?: Record<string, { schema: SchemaObject }>; headers?: Json }>;
}
interface SchemaObject {
  type?: string;
  enum?: unknown[];
  required?: string[];
  properties?: Record<string, SchemaObject>;
  nullable?: boolean;
  [key: string]: unknown;
}
interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string; description?: string };
  servers?: Array<{ url: string; description?: string }>;
  paths: Record<string, Record<string, Operation>>;
  components: { securitySchemes: Record<string, { type: string; scheme?: string }>; schemas?: Record<string, SchemaObject> };
}

const SEED_FIXTURE = new URL('../fixtures/seeds/003_fd8fb3710b84503f.txt', import.meta.url);
/** Where the seed lives next to a checkout in the shared workspace; the fixture is its copy. */
const SEED_SHARED = new URL('../../../shared/seeds/003_fd8fb3710b84503f.txt', import.meta.url);
const HTTP_METHODS = new Set(['get', 'put', 'post', 'delete', 'patch', 'options', 'head', 'trace']);

let broker: TestBroker;
let doc: OpenApiDocument;
beforeAll(async () => {
  broker = await startTestBroker({ env: { LOG_LEVEL: 'warn' } });
  const res = await broker.app.inject({ method: 'GET', url: '/docs/json' });
  expect(res.statusCode).toBe(200);
  expect(res.headers['content-type']).toMatch(/^application\/json/);
  doc = res.json();
});
afterAll(async () => {
  await broker?.close();
});

function operations(): Array<{ path: string; method: string; op: Operation }> {
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.entries(item).filter(([method]) => HTTP_METHODS.has(method)).map(([method, op]) => ({ path, method, op })));
}

function jsonSchema(op: Operation, status: string): SchemaObject {
  const schema = op.responses[status]?.content?.['application/json']?.schema;
  if (!schema) throw new Error(`no application/json schema for ${status}`);
  return schema;
}

function errorCodes(op: Operation, status: string): string[] {
  return (jsonSchema(op, status).properties?.code?.enum ?? []) as string[];
}

describe('the OpenAPI document', () => {
  it('is OpenAPI 3.0 with info, tags and the bearer security schemes', () => {
    expect(doc.openapi).toMatch(/^3\.0\.\d+$/);
    expect(doc.info.title).toBe('tunnel-broker');
    expect(doc.info.version).toMatch(/^\d+\.\d+\.\d+/);
    for (const name of ['bearerAuth', 'heartbeatToken', 'metricsToken']) {
      expect(doc.components.securitySchemes[name]).toMatchObject({ type: 'http', scheme: 'bearer' });
    }
    for (const { path, method, op } of operations()) {
      const where = `${method} ${path}`;
      expect(op.summary, where).toBeTruthy();
      expect(op.tags?.length, where).toBe(1);
      expect(Object.keys(op.responses).length, where).toBeGreaterThan(0);
      for (const [status, response] of Object.entries(op.responses)) {
        expect(status, where).toMatch(/^[1-5]\d\d$/);
        expect(response.description, `${where} ${status}`).toBeTruthy();
        expect(response.description, `${where} ${status}`).not.toBe('Default Response');
      }
      for (const requirement of op.security ?? []) {
        for (const scheme of Object.keys(requirement)) expect(doc.components.securitySchemes, where).toHaveProperty(scheme);
      }
      // Every {param} in the path is declared as a required path parameter.
      for (const [, name] of path.matchAll(/\{([^}]+)\}/g)) {
        expect(op.parameters?.find((p) => p.in === 'path' && p.name === name), `${where} {${name}}`).toMatchObject({ required: true });
      }
    }
  });

  it('names every operation (a unique operationId, what generated clients call it) and the server it describes', () => {
    const ids = operations().map(({ op }) => op.operationId);
    for (const id of ids) expect(id).toMatch(/^[a-z][A-Za-z]+$/);
    expect(new Set(ids).size).toBe(ids.length);
    expect(doc.paths['/v1/tunnels']!.post!.operationId).toBe('createTunnel');
    expect(doc.servers).toEqual([expect.objectContaining({ url: '/' })]);
  });

  it('defines no component that nothing references', () => {
    const text = JSON.stringify(doc.paths);
    const used = (scheme: string) => operations().some(({ op }) => op.security?.some((r) => scheme in r));
    for (const scheme of Object.keys(doc.components.securitySchemes)) expect(used(scheme), scheme).toBe(true);
    for (const name of Object.keys(doc.components.schemas ?? {})) expect(text, name).toContain(`"#/components/schemas/${name}"`);
  });

  it('is the document the agent is generated from: packages/agent/openapi.json (`npm run openapi` rewrites it)', () => {
    const committed = JSON.parse(readFileSync(new URL('../../packages/agent/openapi.json', import.meta.url), 'utf8')) as unknown;
    expect(committed).toEqual(doc);
  });

  it('documents every route the app serves (the docs UI aside), and no other', () => {
    const served = new Set(
      appRoutes(broker.app)
        .filter((r) => r.method !== 'HEAD' && !r.path.startsWith('/docs'))
        // A prefix's `/` route also answers without the trailing slash; the document uses that form.
        .map((r) => `${r.method.toLowerCase()} ${(r.path.length > 1 ? r.path.replace(/\/$/, '') : r.path).replace(/:(\w+)/g, '{$1}')}`),
    );
    const documented = new Set(operations().map(({ path, method }) => `${method} ${path}`));
    expect([...documented].sort()).toEqual([...served].sort());
    // The routes this issue is about, by name, in case the route tree's format changes.
    for (const route of ['get /healthz', 'get /readyz', 'get /metrics', 'post /v1/tunnels', 'get /v1/tunnels', 'get /v1/tunnels/{tunnelId}', 'delete /v1/tunnels/{tunnelId}', 'post /v1/tunnels/{tunnelId}/heartbeat']) {
      expect(documented).toContain(route);
    }
  });

  it('documents every response status and error code of every route, as per-status enums', async () => {
    const { createTunnelSchema, deleteTunnelSchema, getTunnelSchema, heartbeatSchema, listTunnelsSchema } = await import('../../src/tunnels/schemas.js');
    const routeSchemas = {
      'post /v1/tunnels': createTunnelSchema,
      'get /v1/tunnels': listTunnelsSchema,
      'get /v1/tunnels/{tunnelId}': getTunnelSchema,
      'post /v1/tunnels/{tunnelId}/heartbeat': heartbeatSchema,
      'delete /v1/tunnels/{tunnelId}': deleteTunnelSchema,
    };
    for (const [route, schema] of Object.entries(routeSchemas)) {
      const [method, path] = route.split(' ') as [string, string];
      const op = doc.paths[path]![method]!;
      expect(Object.keys(op.responses).sort(), route).toEqual(Object.keys(schema.response).sort());
      for (const [status, responseSchema] of Object.entries(schema.response as Record<string, { properties?: { code?: { enum?: string[] } } }>)) {
        const codes = responseSchema.properties?.code?.enum;
        if (!codes) continue;
        expect(errorCodes(op, status), `${route} ${status}`).toEqual(codes);
        for (const code of codes) expect(ERROR_CATALOGUE[code as keyof typeof ERROR_CATALOGUE].status, `${route} ${code}`).toBe(Number(status));
      }
    }

    const documented = new Set<string>();
    for (const { path, method, op } of operations()) {
      for (const [status, response] of Object.entries(op.responses)) {
        if (Number(status) < 400) continue;
        const codes = errorCodes(op, status);
        expect(codes.length, `${method} ${path} ${status}`).toBeGreaterThan(0);
        // Each error status lists only codes that carry that status.
        for (const code of codes) expect(ERROR_CATALOGUE[code as keyof typeof ERROR_CATALOGUE]?.status, `${method} ${path} ${code}`).toBe(Number(status));
        expect(jsonSchema(op, status).required, `${method} ${path} ${status}`).toEqual(expect.arrayContaining(['code', 'message']));
        codes.forEach((c) => documented.add(c));
        if (codes.some((c) => ['RATE_LIMITED', 'UPSTREAM_UNAVAILABLE', 'IDEMPOTENCY_KEY_IN_USE'].includes(c))) {
          expect(response.headers, `${method} ${path} ${status} Retry-After`).toHaveProperty('Retry-After');
        }
      }
    }
    // Codes no route lists (unknown routes and methods) are in the description's table.
    for (const code of ERROR_CODES) expect(doc.info.description).toContain(`\`${code}\` | ${ERROR_CATALOGUE[code].status}`);
    expect([...documented].every((c) => ERROR_CODES.includes(c as never))).toBe(true);
    // Only the router's own answers are listed by no route.
    expect(ERROR_CODES.filter((c) => !documented.has(c)).sort()).toEqual(['METHOD_NOT_ALLOWED', 'NOT_FOUND']);
  });

  it('documents 429 RATE_LIMITED with Retry-After on every rate-limited route', () => {
    for (const [path, method] of [['/v1/tunnels', 'post'], ['/v1/tunnels', 'get'], ['/v1/tunnels/{tunnelId}', 'get'], ['/v1/tunnels/{tunnelId}', 'delete']] as const) {
      const op = doc.paths[path]![method]!;
      expect(errorCodes(op, '429'), `${method} ${path}`).toContain('RATE_LIMITED');
      expect(op.responses['429']!.headers, `${method} ${path}`).toHaveProperty('Retry-After');
    }
  });

  it('renders the TypeBox schemas as OpenAPI 3.0: no const, no null type, no TypeBox internals, every $ref resolves', () => {
    const problems: string[] = [];
    const resolve = (ref: string): unknown => {
      if (!ref.startsWith('#/')) return undefined;
      return ref.slice(2).split('/').reduce<unknown>((node, part) => (node as Json | undefined)?.[part.replace(/~1/g, '/').replace(/~0/g, '~')], doc);
    };
    const walk = (node: unknown, at: string): void => {
      if (Array.isArray(node)) return node.forEach((item, i) => walk(item, `${at}/${i}`));
      if (typeof node !== 'object' || node === null) return;
      for (const [key, value] of Object.entries(node)) {
        if (key === '$ref' && resolve(value as string) === undefined) problems.push(`${at}: unresolved $ref ${String(value)}`);
        if (key === 'const' || key === '$id' || key === '$schema' || key.startsWith('~')) problems.push(`${at}: ${key}`);
        if (key === 'type' && (Array.isArray(value) || value === 'null')) problems.push(`${at}: type ${JSON.stringify(value)}`);
        // A union of literals is one enum, not anyOf of one-value enums.
        if (key === 'anyOf' && Array.isArray(value) && value.every((m) => Array.isArray((m as Json).enum) && ((m as Json).enum as unknown[]).length === 1)) {
          problems.push(`${at}: anyOf of literals`);
        }
        walk(value, `${at}/${key}`);
      }
    };
    walk(doc, '#');
    expect(problems).toEqual([]);

    const summary = jsonSchema(doc.paths['/v1/tunnels/{tunnelId}']!.get!, '200');
    expect(summary.properties!.expiresAt).toEqual({ type: 'string', format: 'date-time', nullable: true });
    expect(summary.properties!.status).toEqual({ type: 'string', enum: ['creating', 'active', 'ending'] });
    // 204 has no body.
    expect(doc.paths['/v1/tunnels/{tunnelId}']!.delete!.responses['204']!.content).toBeUndefined();
    // /metrics is text.
    expect(doc.paths['/metrics']!.get!.responses['200']!.content).toEqual({ 'text/plain': { schema: { type: 'string' } } });
  });

  it('states who may call what: /v1 needs a bearer token (the heartbeat also takes its heartbeat token), /metrics maybe METRICS_TOKEN, probes nothing', () => {
    for (const { path, method, op } of operations()) {
      const where = `${method} ${path}`;
      if (path.startsWith('/v1/')) {
        expect(op.security, where).toContainEqual({ bearerAuth: [] });
        expect(errorCodes(op, '401'), where).toContain('UNAUTHORIZED');
      }
    }
    expect(doc.paths['/v1/tunnels/{tunnelId}/heartbeat']!.post!.security).toEqual([{ bearerAuth: [] }, { heartbeatToken: [] }]);
    expect(doc.paths['/v1/tunnels']!.post!.security).toEqual([{ bearerAuth: [] }]);
    expect(doc.paths['/metrics']!.get!.security).toEqual([{ metricsToken: [] }, {}]);
    expect(doc.paths['/healthz']!.get!.security).toEqual([]);
    expect(doc.paths['/readyz']!.get!.security).toEqual([]);
    expect(Object.keys(doc.paths['/readyz']!.get!.responses).sort()).toEqual(['200', '500', '503']);
    expect(jsonSchema(doc.paths['/readyz']!.get!, '503').properties!.details!.properties!.checks!.required).toEqual(['postgres', 'redis']);
  });

  it('documents the Idempotency-Key request header and the Idempotent-Replayed response header of POST /v1/tunnels', () => {
    const op = doc.paths['/v1/tunnels']!.post!;
    const header = op.parameters?.find((p) => p.in === 'header' && p.name === 'idempotency-key');
    expect(header).toMatchObject({ required: false, schema: { type: 'string', minLength: 1, maxLength: 255 } });
    expect(op.parameters?.some((p) => p.name.toLowerCase() === 'authorization')).toBe(false);
    expect(op.responses['201']!.headers).toHaveProperty('idempotent-replayed');
    expect(op.responses['400']!.headers).toHaveProperty('idempotent-replayed');
    expect(op.responses['429']!.headers).not.toHaveProperty('idempotent-replayed');
  });

  it('answers a heartbeat with `ok: true`, required, as clients written against the published API (rs-tunnel) read it', () => {
    const body = jsonSchema(doc.paths['/v1/tunnels/{tunnelId}/heartbeat']!.post!, '200');
    expect(body.properties!.ok).toEqual({ type: 'boolean', enum: [true] });
    expect(body.required).toEqual(expect.arrayContaining(['ok', 'expiresAt']));
    // The schema the route serializes with: a body without it, or with `ok: false`, is not a heartbeat answer.
    const expiresAt = new Date().toISOString();
    expect(Value.Check(HeartbeatResponse, { ok: true, expiresAt })).toBe(true);
    expect(Value.Check(HeartbeatResponse, { expiresAt })).toBe(false);
    expect(Value.Check(HeartbeatResponse, { ok: false, expiresAt })).toBe(false);
  });

  it('says GET and DELETE take the id, hostname or slug, and the heartbeat the id only', () => {
    const tunnelParam = (op: Operation) => op.parameters?.find((p) => p.in === 'path' && p.name === 'tunnelId') as { description?: string } | undefined;
    const item = doc.paths['/v1/tunnels/{tunnelId}']!;
    for (const [method, op] of [['get', item.get!], ['delete', item.delete!]] as const) {
      expect(tunnelParam(op)?.description, method).toMatch(/its id, its hostname .*or its slug/);
      expect(tunnelParam(op)?.description, method).toContain('outside TUNNEL_DOMAIN');
    }
    expect(tunnelParam(doc.paths['/v1/tunnels/{tunnelId}/heartbeat']!.post!)?.description).toMatch(/id .*not its hostname or slug/);
  });
});

/** The seed spec's description of POST /v1/tunnels, read from its text. */
interface SeedSpec {
  requestFields: Array<{ name: string; type: string; required: boolean }>;
  responseFields: Array<{ name: string; type: string }>;
  errors: Array<{ code: string; status: number }>;
  bearer: boolean;
  rateLimited: boolean;
}

function parseSeed(text: string): SeedSpec {
  const lines = text.split('\n').map((l) => l.trim());
  const headings = ['Authentication', 'Rate Limiting', 'Request Body', 'Response', 'Error Responses', 'Example Request', 'Example Response', 'Next Steps'];
  const section = (name: string): string[] => {
    const start = lines.indexOf(name);
    if (start < 0) throw new Error(`seed spec: no "${name}" section`);
    const end = lines.findIndex((l, i) => i > start && headings.includes(l));
    return lines.slice(start + 1, end < 0 ? undefined : end);
  };
  const TYPES = new Set(['string', 'number', 'integer', 'boolean', 'object', 'array']);
  const fields = (body: string[]) => body.flatMap((line, i) =>
    /^[A-Za-z][A-Za-z0-9_]*$/.test(line) && TYPES.has(body[i + 1] ?? '') ? [{ name: line, type: body[i + 1]!, required: body[i + 2] === 'required' }] : []);
  const errors = section('Error Responses').flatMap((line, i, body) =>
    /^[A-Z][A-Z0-9_]+$/.test(line) && /^\d{3}$/.test(body[i + 1] ?? '') ? [{ code: line, status: Number(body[i + 1]) }] : []);
  return {
    requestFields: fields(section('Request Body')),
    responseFields: fields(section('Response')).map(({ name, type }) => ({ name, type })),
    errors,
    bearer: section('Authentication').some((l) => /Authorization: Bearer/.test(l)),
    rateLimited: /rate-limited to \d+ requests per minute/.test(section('Rate Limiting').join(' ')),
  };
}

/** JSON Schema types that satisfy a type the seed names ("number" includes integers). */
const COMPATIBLE: Record<string, string[]> = { number: ['number', 'integer'], integer: ['integer'], string: ['string'], boolean: ['boolean'], object: ['object'], array: ['array'] };

describe('POST /v1/tunnels against the seed API spec', () => {
  const text = readFileSync(SEED_FIXTURE, 'utf8');
  const seed = parseSeed(text);

  it('the fixture is the shared seed, and parses into what it says', () => {
    if (existsSync(SEED_SHARED)) expect(text).toBe(readFileSync(SEED_SHARED, 'utf8'));
    // Guards the parser: a parser that found nothing would make every check below vacuous.
    expect(seed.requestFields.map((f) => f.name)).toEqual(['port', 'requestedSlug']);
    expect(seed.responseFields.map((f) => f.name)).toEqual(['tunnelId', 'hostname', 'cloudflaredToken', 'heartbeatIntervalSec']);
    expect(seed.errors.length).toBeGreaterThanOrEqual(5);
    expect(seed.bearer).toBe(true);
  });

  it('takes the request body the seed describes', () => {
    const body = doc.paths['/v1/tunnels']!.post!.requestBody!;
    expect(body.required).toBe(true);
    const schema = body.content['application/json']!.schema;
    expect(schema.type).toBe('object');
    for (const field of seed.requestFields) {
      const property = schema.properties?.[field.name];
      expect(property, field.name).toBeDefined();
      expect(COMPATIBLE[field.type], `${field.name}: ${property?.type}`).toContain(property!.type);
      expect(schema.required?.includes(field.name) ?? false, `${field.name} required`).toBe(field.required);
    }
  });

  it('answers 201 with every field the seed lists, each required and of its type', () => {
    const schema = jsonSchema(doc.paths['/v1/tunnels']!.post!, '201');
    for (const field of seed.responseFields) {
      expect(schema.properties?.[field.name], field.name).toBeDefined();
      expect(COMPATIBLE[field.type], `${field.name}: ${schema.properties![field.name]!.type}`).toContain(schema.properties![field.name]!.type);
      expect(schema.required, field.name).toContain(field.name);
    }
  });

  it('documents each error code the seed lists, under the status it gives', () => {
    const op = doc.paths['/v1/tunnels']!.post!;
    for (const { code, status } of seed.errors) {
      expect(op.responses, `${code} ${status}`).toHaveProperty(String(status));
      expect(errorCodes(op, String(status)), `${code} ${status}`).toContain(code);
      expect(ERROR_CATALOGUE[code as keyof typeof ERROR_CATALOGUE]?.status, code).toBe(status);
    }
  });

  it('needs the bearer token and documents the rate limit the seed describes', () => {
    const op = doc.paths['/v1/tunnels']!.post!;
    expect(seed.bearer).toBe(true);
    const schemes = (op.security ?? []).flatMap((r) => Object.keys(r)).map((name) => doc.components.securitySchemes[name]);
    expect(schemes).toContainEqual(expect.objectContaining({ type: 'http', scheme: 'bearer' }));
    expect(errorCodes(op, '401')).toContain('UNAUTHORIZED');
    expect(seed.rateLimited).toBe(true);
    expect(errorCodes(op, '429')).toContain('RATE_LIMITED');
  });
});

describe('Swagger UI', () => {
  it('serves /docs as HTML whose scripts and stylesheets load from the package (no network)', async () => {
    const page = await broker.app.inject({ method: 'GET', url: '/docs' });
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.headers['content-security-policy']).toContain("default-src 'self'");
    const assets = [...page.body.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!).filter((u) => !u.startsWith('http') && !u.startsWith('data:'));
    expect(assets.some((u) => u.endsWith('.js'))).toBe(true);
    expect(assets.some((u) => u.endsWith('.css'))).toBe(true);
    for (const asset of assets) {
      const url = asset.startsWith('/') ? asset : `/docs/${asset.replace(/^\.\//, '')}`;
      const res = await broker.app.inject({ method: 'GET', url });
      expect(res.statusCode, url).toBe(200);
      expect(res.body.length, url).toBeGreaterThan(0);
    }
    const bundle = await broker.app.inject({ method: 'GET', url: '/docs/static/swagger-ui-bundle.js' });
    expect(bundle.statusCode).toBe(200);
    expect(bundle.headers['content-type']).toMatch(/javascript/);
    // The initializer points the UI at this document.
    const init = await broker.app.inject({ method: 'GET', url: '/docs/static/swagger-initializer.js' });
    expect(init.body).toContain('json');
  });

  it('answers unknown asset paths in the error envelope', async () => {
    const res = await broker.app.inject({ method: 'GET', url: '/docs/static/nope.js' });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toMatchObject({ code: 'NOT_FOUND' });
  });
});
