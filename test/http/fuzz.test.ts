import { createHmac, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CATALOGUE, type ErrorCode } from '../../src/errors/catalogue.js';
import { startTestBroker, TEST_JWT_SECRET, type TestBroker } from '../helpers/broker.js';

/**
 * Bad input never produces a 500: property-based tests over bodies, headers and path
 * parameters of every route. Each response must be < 500, JSON, and for errors the
 * catalogue's envelope with the catalogue's status for its code. The generators lean
 * towards a valid bearer token so that most cases get past authentication and reach
 * validation, the service, PostgreSQL and Redis.
 */

let broker: TestBroker;
/** A tunnel that exists, so path fuzzing also reaches the found-and-owned branches. */
let liveTunnelId: string;
const OWNER = `fuzz-owner-${randomUUID()}`;

beforeAll(async () => {
  // Limits high enough that valid requests keep reaching the service and Cloudflare rather than stopping at 429.
  broker = await startTestBroker({
    env: {
      CREATE_RATE_LIMIT_PER_MINUTE: '100000', READ_RATE_LIMIT_PER_MINUTE: '100000', DELETE_RATE_LIMIT_PER_MINUTE: '100000',
      MAX_TUNNELS_PER_USER: '1000', LOG_LEVEL: 'warn',
    },
  });
  const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(OWNER), payload: { port: 3000 } });
  expect(res.statusCode).toBe(201);
  liveTunnelId = res.json().tunnelId;
});
afterAll(async () => {
  await broker?.close();
});

const RUNS = { numRuns: 200 };

/** What light-my-request accepts as a header value: Node's rules (no CR, LF or NUL), Latin-1. */
const headerValue = (maxLength = 300) =>
  fc.string({ unit: fc.integer({ min: 0x09, max: 0xff }).filter((c) => c !== 0x0a && c !== 0x0d && (c === 0x09 || c >= 0x20)).map((c) => String.fromCharCode(c)), maxLength });

function base64url(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

/** A JWT signed with the right secret but whatever header and claims the generator chose. */
function signRaw(header: unknown, claims: unknown): string {
  const head = `${base64url(header)}.${base64url(claims)}`;
  return `${head}.${createHmac('sha256', TEST_JWT_SECRET).update(head).digest('base64url')}`;
}

const subject = fc.oneof(
  fc.string({ unit: 'binary', minLength: 1, maxLength: 220 }),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 50 }),
  fc.constantFrom('\u0000', 'a\u0000b', '\ud800', 'x\udfff', ' ', '%00', "'; DROP TABLE tunnels; --", 'a'.repeat(200), 'a'.repeat(201)),
);

const authorization: fc.Arbitrary<string | undefined> = fc.oneof(
  { weight: 6, arbitrary: fc.constant(undefined).map(() => `Bearer ${broker.token(OWNER)}`) },
  { weight: 3, arbitrary: subject.map((sub) => `Bearer ${signRaw({ alg: 'HS256', typ: 'JWT' }, { sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`) },
  {
    weight: 2,
    arbitrary: fc.record({
      alg: fc.constantFrom('HS256', 'none', 'RS256', 'HS512'),
      sub: fc.oneof(subject, fc.jsonValue({ maxDepth: 2 })),
      exp: fc.oneof(fc.integer(), fc.double(), fc.constant(Math.floor(Date.now() / 1000) + 3600), fc.string()),
    }, { requiredKeys: [] }).map(({ alg, ...claims }) => `Bearer ${signRaw({ alg, typ: 'JWT' }, claims)}`),
  },
  { weight: 1, arbitrary: headerValue().map((v) => `Bearer ${v}`) },
  { weight: 1, arbitrary: headerValue() },
  { weight: 1, arbitrary: fc.constant(undefined) },
);

const contentType: fc.Arbitrary<string | undefined> = fc.oneof(
  { weight: 6, arbitrary: fc.constant('application/json') },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      'application/json; charset=utf-8', 'application/json; charset=latin1', 'application/json;;;', 'APPLICATION/JSON',
      'application/json; charset="utf-16"', 'text/plain', 'text/plain; charset=utf-8', 'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x', 'application/octet-stream', 'application/xml', 'application/problem+json', '*/*', '',
    ),
  },
  { weight: 1, arbitrary: headerValue(80) },
  { weight: 1, arbitrary: fc.constant(undefined) },
);

const hugeNumber = fc.oneof(
  fc.double().map(String).filter((s) => s !== 'NaN' && !s.includes('Infinity')),
  fc.constantFrom('1e400', '-1e400', '1e-400', '-0', '0.0', '3000.0000000000001', '65535.00000000001', '9007199254740993', `1${'0'.repeat(400)}`),
  fc.bigInt().map(String),
);

const slugish = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9-]{0,20}[A-Za-z0-9]$/),
  fc.string({ unit: 'grapheme', maxLength: 70 }),
  fc.string({ unit: 'binary', maxLength: 70 }),
  fc.constantFrom('xn--80ak6aa92e', 'www', 'API', 'a'.repeat(63), 'a'.repeat(64), '-', 'a.b', '\u0000'),
);

/** Raw body text: mostly JSON of every shape, some of it close to a valid create. */
const bodyText: fc.Arbitrary<string | Buffer | undefined> = fc.oneof(
  {
    // Valid or nearly: these reach Cloudflare, the slug index and the Idempotency-Key store.
    weight: 3,
    arbitrary: fc.record({
      port: fc.oneof(fc.integer({ min: 1, max: 65_535 }), fc.constantFrom(0, 65_536, 3000.5)),
      requestedSlug: fc.oneof(fc.stringMatching(/^[a-z0-9]{1,8}$/), fc.constantFrom('www', 'xn--p1ai', 'Fuzz-Slug')),
    }, { requiredKeys: ['port'] }).map((v) => JSON.stringify(v)),
  },
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v) ?? 'null') },
  {
    weight: 4,
    arbitrary: fc.record({
      port: fc.oneof(fc.integer({ min: -5, max: 70_000 }), fc.jsonValue({ maxDepth: 1 })),
      requestedSlug: fc.oneof(slugish, fc.jsonValue({ maxDepth: 1 })),
      extra: fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
    }, { requiredKeys: [] }).map(({ extra, ...fields }) => JSON.stringify({ ...extra, ...fields })),
  },
  { weight: 2, arbitrary: fc.tuple(hugeNumber, fc.option(slugish)).map(([n, slug]) => `{"port": ${n}${slug === null ? '' : `, "requestedSlug": ${JSON.stringify(slug)}`}}`) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 8_000 }).map((n) => '['.repeat(n) + ']'.repeat(n)) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 3_000 }).map((n) => '{"a":'.repeat(n) + '1' + '}'.repeat(n)) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 8_000 }).map((n) => '['.repeat(n)) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '{"port":3000,"__proto__":{"admin":true}}', '{"port":3000,"constructor":{"prototype":{"x":1}}}', '{"port":3000,"port":"x"}',
      '\ufeff{"port":3000}', '{"port":3000}\u0000', '{"port":3000} trailing', '', ' ', '\n', 'null', 'true', '[]', '{}', '"port"',
    ),
  },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 500 }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2_000 }).map((bytes) => Buffer.from(bytes)) },
  { weight: 1, arbitrary: fc.constant(undefined) },
);

const idempotencyKey: fc.Arbitrary<string | undefined> = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  // A few keys used over and over: replays, and reuses with other bodies.
  { weight: 2, arbitrary: fc.constantFrom('fuzz-key-1', 'fuzz-key-2', 'fuzz key 3') },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 40 }) },
  { weight: 2, arbitrary: headerValue(300) },
);

/** A path segment as a client could send it: URL-safe ASCII, percent-encodings valid or not, unicode encoded. */
const pathSegment: fc.Arbitrary<string> = fc.oneof(
  fc.constant(undefined).map(() => liveTunnelId),
  fc.tuple(fc.uuid(), fc.boolean()).map(([id, upper]) => (upper ? id.toUpperCase() : id)),
  fc.string({ unit: fc.constantFrom(...'abcdefABCDEF0123456789-_.~!$&\'()*+,;=:@%'.split('')), maxLength: 60 }),
  fc.string({ unit: 'grapheme', maxLength: 60 }).map(encodeURIComponent),
  fc.string({ unit: 'binary', maxLength: 60 }).map((s) => encodeURIComponent(s.replace(/[\ud800-\udfff]/g, 'x'))),
  fc.constantFrom('%', '%zz', '%E0%A4%A', '%C0%AF', '%00', '%2F', '%2e%2e', '..%2F..%2Fetc%2Fpasswd', '%uD800', '%ED%A0%80', '%FF%FE'),
  fc.integer({ min: 100, max: 5_000 }).map((n) => 'a'.repeat(n)),
  fc.integer({ min: 30, max: 1_000 }).map((n) => '%41'.repeat(n)),
);

const query = fc.oneof(fc.constant(''), pathSegment.map((s) => `?${s}`), fc.constant('?a=1&a=2&__proto__=x'));

interface Sent {
  method: string;
  url: string;
  headers: Record<string, string>;
  payload?: string | Buffer;
}

function send(request: Sent): Promise<LightMyRequestResponse> {
  return broker.app.inject({
    method: request.method as 'GET',
    url: request.url,
    headers: request.headers,
    ...(request.payload === undefined ? {} : { payload: request.payload }),
  });
}

function headersOf(parts: { authorization?: string | undefined; contentType?: string | undefined; idempotencyKey?: string | undefined }): Record<string, string> {
  const headers: Record<string, string> = {};
  if (parts.authorization !== undefined) headers.authorization = parts.authorization;
  if (parts.contentType !== undefined) headers['content-type'] = parts.contentType;
  if (parts.idempotencyKey !== undefined) headers['idempotency-key'] = parts.idempotencyKey;
  return headers;
}

/** The invariant: no 5xx, JSON, and every error is the catalogue's envelope with its own status. */
async function expectCleanResponse(request: Sent): Promise<void> {
  const res = await send(request);
  const context = `${request.method} ${request.url.slice(0, 200)} -> ${res.statusCode} ${res.body.slice(0, 300)}`;
  expect(res.statusCode, context).toBeLessThan(500);
  if (request.method === 'HEAD' || res.statusCode === 204) {
    expect(res.body, context).toBe('');
    return;
  }
  expect(res.headers['content-type'], context).toMatch(/^application\/json/);
  const body = JSON.parse(res.body) as Record<string, unknown>;
  if (res.statusCode < 400) return;
  expect(Object.keys(body).every((k) => ['code', 'message', 'details'].includes(k)), context).toBe(true);
  expect(typeof body.message, context).toBe('string');
  expect(Object.keys(ERROR_CATALOGUE), context).toContain(body.code);
  expect(ERROR_CATALOGUE[body.code as ErrorCode].status, context).toBe(res.statusCode);
  if (body.details !== undefined) expect(typeof body.details === 'object' && body.details !== null && !Array.isArray(body.details), context).toBe(true);
}

describe('bad input never produces a 500', () => {
  it('POST /v1/tunnels: any body, content type, token and Idempotency-Key', async () => {
    await fc.assert(
      fc.asyncProperty(bodyText, contentType, authorization, idempotencyKey, async (payload, type, auth, key) => {
        await expectCleanResponse({ method: 'POST', url: '/v1/tunnels', headers: headersOf({ authorization: auth, contentType: type, idempotencyKey: key }), payload });
      }),
      RUNS,
    );
  });

  it('GET, DELETE and heartbeat on /v1/tunnels/:id: any id, token and body', async () => {
    const route = fc.constantFrom(
      { method: 'GET', suffix: '' },
      { method: 'DELETE', suffix: '' },
      { method: 'POST', suffix: '/heartbeat' },
      { method: 'HEAD', suffix: '' },
    );
    await fc.assert(
      fc.asyncProperty(route, pathSegment, query, authorization, contentType, fc.option(bodyText, { nil: undefined }), async (r, id, q, auth, type, payload) => {
        await expectCleanResponse({ method: r.method, url: `/v1/tunnels/${id}${r.suffix}${q}`, headers: headersOf({ authorization: auth, contentType: type }), payload });
      }),
      RUNS,
    );
  });

  it('GET /v1/tunnels and /healthz: any token, query and headers', async () => {
    const path = fc.constantFrom('/v1/tunnels', '/v1/tunnels/', '/healthz', '/healthz/', '//v1/tunnels', '/V1/TUNNELS', '/v1//tunnels');
    await fc.assert(
      fc.asyncProperty(path, fc.constantFrom('GET', 'HEAD'), query, authorization, contentType, fc.option(bodyText, { nil: undefined }), async (p, method, q, auth, type, payload) => {
        await expectCleanResponse({ method, url: `${p}${q}`, headers: headersOf({ authorization: auth, contentType: type }), payload });
      }),
      RUNS,
    );
  });

  it('any method on any path', async () => {
    const method = fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD', 'TRACE', 'PROPFIND', 'SEARCH');
    const path = fc.oneof(
      fc.array(pathSegment, { minLength: 0, maxLength: 5 }).map((segments) => `/${segments.join('/')}`),
      fc.tuple(fc.constantFrom('/v1/tunnels', '/v1', '/healthz', '/v1/tunnels/x/heartbeat'), fc.array(pathSegment, { maxLength: 3 })).map(([prefix, rest]) => [prefix, ...rest].join('/')),
    );
    await fc.assert(
      fc.asyncProperty(method, path, query, authorization, contentType, idempotencyKey, fc.option(bodyText, { nil: undefined }), async (m, p, q, auth, type, key, payload) => {
        await expectCleanResponse({ method: m, url: `${p}${q}`, headers: headersOf({ authorization: auth, contentType: type, idempotencyKey: key }), payload });
      }),
      RUNS,
    );
  });
});
