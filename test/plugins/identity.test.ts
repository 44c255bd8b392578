import { createHmac, generateKeyPairSync, type KeyObject, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createSigner } from 'fast-jwt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JWKS_DEFAULTS } from '../../src/auth/jwks-key-store.js';
import { ConfigError, loadBootConfig } from '../../src/config/env.js';
import { eventually, startTestBroker, TEST_JWT_SECRET, type TestBroker } from '../helpers/broker.js';

/**
 * Tokens from an external identity provider: RS256 and ES256, by PEM public key or by JWKS
 * (served by a real HTTP server on 127.0.0.1), with issuer, audience and user-claim checks,
 * and the attacks on algorithm choice.
 */

const ISSUER = 'https://idp.example.test/';
const AUDIENCE = 'tunnel-broker';
const nowSec = () => Math.floor(Date.now() / 1000);
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rotatedRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const pem = (key: KeyObject) => key.export({ type: key.type === 'private' ? 'pkcs8' : 'spki', format: 'pem' }) as string;

type Alg = 'RS256' | 'ES256' | 'RS512' | 'PS256' | 'ES384';

/** A token signed by the provider's private key, with the usual claims unless overridden. */
function providerToken(key: KeyObject, alg: Alg, claims: Record<string, unknown> = {}, kid?: string): string {
  const sign = createSigner({ key: pem(key), algorithm: alg, ...(kid === undefined ? {} : { kid }) });
  const payload: Record<string, unknown> = { sub: `idp-user-${randomUUID()}`, iss: ISSUER, aud: AUDIENCE, exp: nowSec() + 600, ...claims };
  for (const [k, v] of Object.entries(payload)) if (v === undefined) delete payload[k];
  return sign(payload);
}

function unsigned(header: object, claims: object): string {
  return `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`;
}

/** The classic confusion attack: HS256 with the provider's public key (as published) as the HMAC secret. */
function hmacWithPublicKey(publicKeyText: string, claims: object, header: object = {}): string {
  const head = `${Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT', ...header })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  return `${head}.${createHmac('sha256', publicKeyText).update(head).digest('base64url')}`;
}

async function status(broker: TestBroker, token: string): Promise<number> {
  return (await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: bearer(token) })).statusCode;
}

/** Creates a tunnel with `token` and proves it belongs to `userId` by listing with userId's HS256 token. */
async function expectOwnedBy(broker: TestBroker, token: string, userId: string): Promise<void> {
  const created = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: bearer(token), payload: { port: 3000 } });
  expect(created.statusCode).toBe(201);
  const list = await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: broker.auth(userId) });
  expect(list.json().tunnels.map((t: { id: string }) => t.id)).toContain(created.json().tunnelId);
}

describe('RS256 with JWT_PUBLIC_KEY, issuer and audience', () => {
  let broker: TestBroker;
  const publicPem = pem(rsa.publicKey);
  beforeAll(async () => {
    // Written with literal \n, as in a .env file.
    broker = await startTestBroker({ env: { JWT_PUBLIC_KEY: publicPem.trim().replace(/\n/g, '\\n'), JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE } });
  });
  afterAll(async () => {
    await broker?.close();
  });

  it('accepts the provider\'s token, with the user in sub', async () => {
    const userId = `idp-user-${randomUUID()}`;
    await expectOwnedBy(broker, providerToken(rsa.privateKey, 'RS256', { sub: userId }), userId);
    // One of several audiences is enough.
    expect(await status(broker, providerToken(rsa.privateKey, 'RS256', { aud: ['something-else', AUDIENCE] }))).toBe(200);
  });

  it('still accepts the broker\'s own HS256 access tokens and heartbeat tokens', async () => {
    const userId = `local-${randomUUID()}`;
    const created = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000 } });
    expect(created.statusCode).toBe(201);
    const { tunnelId, heartbeatToken } = created.json();
    expect((await broker.app.inject({ method: 'POST', url: `/v1/tunnels/${tunnelId}/heartbeat`, headers: bearer(heartbeatToken) })).statusCode).toBe(200);
  });

  const refused = (): Array<[string, string]> => [
    ['another issuer', providerToken(rsa.privateKey, 'RS256', { iss: 'https://evil.example.test/' })],
    ['no issuer', providerToken(rsa.privateKey, 'RS256', { iss: undefined })],
    ['another audience', providerToken(rsa.privateKey, 'RS256', { aud: 'another-service' })],
    ['no audience', providerToken(rsa.privateKey, 'RS256', { aud: undefined })],
    ['an expired token', providerToken(rsa.privateKey, 'RS256', { exp: nowSec() - 5 })],
    ['no exp', providerToken(rsa.privateKey, 'RS256', { exp: undefined })],
    ['a token not valid yet', providerToken(rsa.privateKey, 'RS256', { nbf: nowSec() + 600 })],
    ['no sub', providerToken(rsa.privateKey, 'RS256', { sub: undefined })],
    ['a sub with a control character', providerToken(rsa.privateKey, 'RS256', { sub: 'u\u0000' })],
    ['another RSA key', providerToken(otherRsa.privateKey, 'RS256')],
    ['ES256 (not the algorithm of this key)', providerToken(ec.privateKey, 'ES256')],
    ['RS512 by the right key', providerToken(rsa.privateKey, 'RS512')],
    ['PS256 by the right key', providerToken(rsa.privateKey, 'PS256')],
    ['alg none', unsigned({ alg: 'none', typ: 'JWT' }, { sub: 'u', iss: ISSUER, aud: AUDIENCE, exp: nowSec() + 600 })],
    ['alg confusion: HS256 keyed with the PEM public key', hmacWithPublicKey(publicPem, { sub: 'u', iss: ISSUER, aud: AUDIENCE, exp: nowSec() + 600 })],
    ['alg confusion: HS256 keyed with the PEM as configured', hmacWithPublicKey(publicPem.trim().replace(/\n/g, '\\n'), { sub: 'u', iss: ISSUER, aud: AUDIENCE, exp: nowSec() + 600 })],
    ['alg confusion: HS256 keyed with the PKCS#1 PEM', hmacWithPublicKey(rsa.publicKey.export({ type: 'pkcs1', format: 'pem' }) as string, { sub: 'u', iss: ISSUER, aud: AUDIENCE, exp: nowSec() + 600 })],
  ];

  for (const [what] of refused()) {
    it(`refuses ${what} with 401`, async () => {
      const token = refused().find(([w]) => w === what)![1];
      const res = await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: bearer(token) });
      expect(res.statusCode).toBe(401);
      expect(res.json().code).toBe('UNAUTHORIZED');
      expect(res.headers['www-authenticate']).toBe('Bearer');
    });
  }
});

describe('ES256 with JWT_PUBLIC_KEY and a custom user claim', () => {
  let broker: TestBroker;
  beforeAll(async () => {
    broker = await startTestBroker({ env: { JWT_PUBLIC_KEY: pem(ec.publicKey), JWT_USER_CLAIM: 'email' } });
  });
  afterAll(async () => {
    await broker?.close();
  });

  it('warns at boot that, outside production, it runs without JWT_ISSUER and JWT_AUDIENCE', () => {
    const warnings = broker.logs.lines.filter((l) => l.level === 40 && /JWT_ISSUER, JWT_AUDIENCE: should be set with JWT_PUBLIC_KEY/.test(String(l.msg)));
    expect(warnings).toHaveLength(1);
  });

  it('takes the user id from JWT_USER_CLAIM', async () => {
    const email = `${randomUUID()}@example.test`;
    await expectOwnedBy(broker, providerToken(ec.privateKey, 'ES256', { email, sub: 'not-the-user-id' }), email);
  });

  it('refuses a token without a usable user claim, saying which claim', async () => {
    for (const email of [undefined, 42, '', 'x'.repeat(201)]) {
      const res = await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: bearer(providerToken(ec.privateKey, 'ES256', { email })) });
      expect(res.statusCode, String(email)).toBe(401);
      if (email !== undefined) expect(res.json().message, String(email)).toContain('"email"');
    }
  });

  it('refuses RS256 (the key is P-256) and ES256 signed by another key; accepts no iss/aud when none is configured', async () => {
    expect(await status(broker, providerToken(rsa.privateKey, 'RS256', { email: 'a@example.test' }))).toBe(401);
    const otherEc = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(await status(broker, providerToken(otherEc.privateKey, 'ES256', { email: 'a@example.test' }))).toBe(401);
    expect(await status(broker, providerToken(ec.privateKey, 'ES256', { email: 'a@example.test', iss: undefined, aud: undefined }))).toBe(200);
  });

  it('keeps `sub` for the broker\'s own HS256 tokens', async () => {
    expect(await status(broker, broker.token('local-user'))).toBe(200);
  });
});

/** A JWKS endpoint on 127.0.0.1 whose keys and health the tests control. */
class JwksServer {
  keys: object[] = [];
  mode: 'ok' | 'error' | 'hang' | 'huge' = 'ok';
  requests = 0;
  readonly #server: Server;

  constructor() {
    this.#server = createServer((req: IncomingMessage, res: ServerResponse) => {
      this.requests++;
      if (this.mode === 'hang') return; // accepts the request and never answers
      if (this.mode === 'error') {
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"down"}');
        return;
      }
      const body = this.mode === 'huge'
        ? JSON.stringify({ keys: this.keys, padding: 'x'.repeat(1024 * 1024) })
        : JSON.stringify({ keys: this.keys });
      // Chunked, so the size cap is enforced on the body itself, not on a declared length.
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(body);
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/.well-known/jwks.json`;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

const jwk = (key: KeyObject, kid: string | undefined, extra: object = {}) => ({ ...key.export({ format: 'jwk' }), ...(kid === undefined ? {} : { kid }), use: 'sig', ...extra });

describe('JWKS (JWT_JWKS_URL)', () => {
  const jwks = new JwksServer();
  let broker: TestBroker;
  /** The key store's clock: moved forward instead of waiting out its refresh interval. */
  let clock = Date.now();
  const REFRESH_INTERVAL_MS = 30_000;

  beforeAll(async () => {
    jwks.keys = [jwk(rsa.publicKey, 'rsa-1', { alg: 'RS256' }), jwk(ec.publicKey, 'ec-1'), jwk(otherRsa.publicKey, 'rsa-512', { alg: 'RS512' })];
    const url = await jwks.listen();
    broker = await startTestBroker({
      env: { JWT_JWKS_URL: url, JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE },
      jwks: { now: () => clock, minRefreshIntervalMs: REFRESH_INTERVAL_MS, timeoutMs: 500 },
    });
  });
  afterAll(async () => {
    await broker?.close();
    await jwks.close();
  });

  const passRefreshInterval = () => {
    clock += REFRESH_INTERVAL_MS + 1;
  };

  it('fetches the key set once and accepts RS256 and ES256 tokens by kid', async () => {
    const userId = `jwks-user-${randomUUID()}`;
    await expectOwnedBy(broker, providerToken(rsa.privateKey, 'RS256', { sub: userId }, 'rsa-1'), userId);
    for (let i = 0; i < 5; i++) {
      expect(await status(broker, providerToken(rsa.privateKey, 'RS256', {}, 'rsa-1'))).toBe(200);
      expect(await status(broker, providerToken(ec.privateKey, 'ES256', {}, 'ec-1'))).toBe(200);
    }
    expect(jwks.requests).toBe(1);
  });

  it('refuses an unknown kid with 401, and a flood of made-up kids costs at most one fetch', async () => {
    passRefreshInterval();
    const before = jwks.requests;
    const results = await Promise.all(Array.from({ length: 20 }, () => status(broker, providerToken(rsa.privateKey, 'RS256', {}, `made-up-${randomUUID()}`))));
    expect(results.every((s) => s === 401)).toBe(true);
    expect(jwks.requests - before).toBe(1);
    // Still within the refresh interval: no more fetches.
    expect(await status(broker, providerToken(rsa.privateKey, 'RS256', {}, 'made-up-again'))).toBe(401);
    expect(jwks.requests - before).toBe(1);
  });

  it('picks up a rotated-in key on the first refresh the interval allows', async () => {
    jwks.keys = [...jwks.keys, jwk(rotatedRsa.publicKey, 'rsa-2')];
    const before = jwks.requests;
    passRefreshInterval();
    const userId = `rotated-${randomUUID()}`;
    await expectOwnedBy(broker, providerToken(rotatedRsa.privateKey, 'RS256', { sub: userId }, 'rsa-2'), userId);
    expect(jwks.requests - before).toBe(1);
    expect(await status(broker, providerToken(rsa.privateKey, 'RS256', {}, 'rsa-1'))).toBe(200);
  });

  it('never lets a token choose a key of another algorithm', async () => {
    passRefreshInterval();
    const cases: Array<[string, string]> = [
      // An ES256 header naming the RSA key's kid: no ES256 key has that kid.
      ['ES256 naming an RSA kid', providerToken(ec.privateKey, 'ES256', {}, 'rsa-1')],
      ['RS256 naming an EC kid', providerToken(rsa.privateKey, 'RS256', {}, 'ec-1')],
      // Published for RS512 only: not usable for RS256, and RS512 is not accepted anyway.
      ['RS256 with a key published for RS512', providerToken(otherRsa.privateKey, 'RS256', {}, 'rsa-512')],
      ['RS512 with that key', providerToken(otherRsa.privateKey, 'RS512', {}, 'rsa-512')],
      ['HS256 keyed with the published key as PEM', hmacWithPublicKey(pem(rsa.publicKey), { sub: 'u', iss: ISSUER, aud: AUDIENCE, exp: nowSec() + 600 }, { kid: 'rsa-1' })],
      ['HS256 keyed with the published JWK', hmacWithPublicKey(JSON.stringify(jwk(rsa.publicKey, 'rsa-1', { alg: 'RS256' })), { sub: 'u', iss: ISSUER, aud: AUDIENCE, exp: nowSec() + 600 }, { kid: 'rsa-1' })],
      ['alg none with a known kid', unsigned({ alg: 'none', kid: 'rsa-1' }, { sub: 'u', iss: ISSUER, aud: AUDIENCE, exp: nowSec() + 600 })],
      ['a kid that is not a string', providerToken(rsa.privateKey, 'RS256', {}, undefined).replace(/^[^.]+/, Buffer.from(JSON.stringify({ alg: 'RS256', kid: 1 })).toString('base64url'))],
      ['another issuer', providerToken(rsa.privateKey, 'RS256', { iss: 'https://evil.example.test/' }, 'rsa-1')],
      ['another audience', providerToken(rsa.privateKey, 'RS256', { aud: 'x' }, 'rsa-1')],
    ];
    for (const [what, token] of cases) expect(await status(broker, token), what).toBe(401);
  });

  it('uses a kid-less token\'s key only when the set has one key of its algorithm', async () => {
    // One EC key: unambiguous.
    expect(await status(broker, providerToken(ec.privateKey, 'ES256', {}))).toBe(200);
    // Two RSA keys usable for RS256 now: ambiguous.
    passRefreshInterval();
    expect(await status(broker, providerToken(rsa.privateKey, 'RS256', {}))).toBe(401);
  });

  it('keeps serving known keys while the endpoint fails, and answers 503 (not 500) for keys it cannot look up', async () => {
    jwks.mode = 'error';
    try {
      passRefreshInterval();
      const known = providerToken(rsa.privateKey, 'RS256', {}, 'rsa-1');
      expect(await status(broker, known)).toBe(200);
      passRefreshInterval();
      const res = await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: bearer(providerToken(rsa.privateKey, 'RS256', {}, 'rsa-new')) });
      expect(res.statusCode).toBe(503);
      expect(res.json().code).toBe('SERVICE_UNAVAILABLE');
      expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
      // The failed refresh did not throw away the keys that were known.
      expect(await status(broker, providerToken(rsa.privateKey, 'RS256', {}, 'rsa-1'))).toBe(200);
      // The broker's own tokens do not depend on the provider.
      expect(await status(broker, broker.token('local-user'))).toBe(200);
      expect(broker.logs.events('identity.jwks_fetch_failed').length).toBeGreaterThan(0);
    } finally {
      jwks.mode = 'ok';
    }
  });

  it('gives up on an endpoint that never answers after its timeout: 503, not a hang', async () => {
    jwks.mode = 'hang';
    try {
      passRefreshInterval();
      const started = Date.now();
      const res = await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: bearer(providerToken(rsa.privateKey, 'RS256', {}, 'rsa-hang')) });
      expect(res.statusCode).toBe(503);
      // timeoutMs is 500 here.
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      jwks.mode = 'ok';
    }
  });

  it('refuses an oversized key set (and keeps the keys it had)', async () => {
    jwks.mode = 'huge';
    try {
      passRefreshInterval();
      expect((await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: bearer(providerToken(rsa.privateKey, 'RS256', {}, 'rsa-huge')) })).statusCode).toBe(503);
      expect(await status(broker, providerToken(rsa.privateKey, 'RS256', {}, 'rsa-1'))).toBe(200);
    } finally {
      jwks.mode = 'ok';
    }
  });

  it('recovers once the endpoint is back', async () => {
    jwks.keys = [...jwks.keys, jwk(rotatedRsa.publicKey, 'rsa-back')];
    passRefreshInterval();
    expect(await status(broker, providerToken(rotatedRsa.privateKey, 'RS256', {}, 'rsa-back'))).toBe(200);
  });

  it('drops a key removed from the set once the set is older than its max age (refreshed in the background)', async () => {
    jwks.keys = jwks.keys.filter((k) => (k as { kid?: string }).kid !== 'rsa-back');
    clock += JWKS_DEFAULTS.maxAgeMs + 1;
    await eventually(async () => (await status(broker, providerToken(rotatedRsa.privateKey, 'RS256', {}, 'rsa-back'))) === 401, { timeoutMs: 5_000, what: 'the removed key to be dropped' });
    expect(await status(broker, providerToken(rsa.privateKey, 'RS256', {}, 'rsa-1'))).toBe(200);
  });
});

describe('JWKS endpoint unreachable from the start', () => {
  let broker: TestBroker;
  beforeAll(async () => {
    // A port that was just free: nothing listens there.
    const probe = new JwksServer();
    const url = await probe.listen();
    await probe.close();
    broker = await startTestBroker({ env: { JWT_JWKS_URL: url }, jwks: { timeoutMs: 500 } });
  });
  afterAll(async () => {
    await broker?.close();
  });

  it('answers provider tokens 503 and keeps serving the broker\'s own tokens', async () => {
    const res = await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: bearer(providerToken(rsa.privateKey, 'RS256', {}, 'rsa-1')) });
    expect(res.statusCode).toBe(503);
    expect(res.json().code).toBe('SERVICE_UNAVAILABLE');
    expect(await status(broker, broker.token('local-user'))).toBe(200);
    // Without a provider key, alg none and HS256-with-anything are still 401, not 503.
    expect(await status(broker, unsigned({ alg: 'none' }, { sub: 'u', exp: nowSec() + 60 }))).toBe(401);
  });
});

describe('no identity provider configured', () => {
  let broker: TestBroker;
  beforeAll(async () => {
    broker = await startTestBroker();
  });
  afterAll(async () => {
    await broker?.close();
  });

  it('refuses RS256 and ES256 tokens, however signed, with 401', async () => {
    expect(await status(broker, providerToken(rsa.privateKey, 'RS256'))).toBe(401);
    expect(await status(broker, providerToken(ec.privateKey, 'ES256'))).toBe(401);
    expect(await status(broker, broker.token('local-user'))).toBe(200);
  });
});

describe('identity configuration is checked at boot', () => {
  const base = { NODE_ENV: 'test', JWT_SECRET: TEST_JWT_SECRET };
  function problems(env: Record<string, string>): string {
    try {
      loadBootConfig({ ...base, ...env });
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      return (error as ConfigError).problems.join('\n');
    }
    return '';
  }

  it('accepts an RSA or P-256 public key, in PEM with real or escaped newlines, or a certificate-free SPKI/PKCS#1 key', () => {
    expect(problems({ JWT_PUBLIC_KEY: pem(rsa.publicKey) })).toBe('');
    expect(problems({ JWT_PUBLIC_KEY: pem(ec.publicKey).trim().replace(/\n/g, '\\n') })).toBe('');
    expect(problems({ JWT_PUBLIC_KEY: rsa.publicKey.export({ type: 'pkcs1', format: 'pem' }) as string })).toBe('');
    const config = loadBootConfig({ ...base, JWT_PUBLIC_KEY: pem(ec.publicKey).trim().replace(/\n/g, '\\n') });
    expect(config.jwt.publicKey).toContain('\n-----END PUBLIC KEY-----');
  });

  it('names JWT_PUBLIC_KEY when it is not a usable public key', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['garbage', 'not a key', /JWT_PUBLIC_KEY: not a PEM public key/],
      ['a private key', pem(rsa.privateKey), /JWT_PUBLIC_KEY: this is a private key/],
      ['an Ed25519 key', pem(generateKeyPairSync('ed25519').publicKey), /JWT_PUBLIC_KEY: .*not supported/],
      ['a P-384 key', pem(generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey), /JWT_PUBLIC_KEY: .*not supported/],
      ['a 1024-bit RSA key', pem(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey), /JWT_PUBLIC_KEY: .*too weak/],
    ];
    for (const [what, value, expected] of cases) expect(problems({ JWT_PUBLIC_KEY: value }), what).toMatch(expected);
  });

  it('refuses JWT_PUBLIC_KEY and JWT_JWKS_URL together', () => {
    expect(problems({ JWT_PUBLIC_KEY: pem(rsa.publicKey), JWT_JWKS_URL: 'https://idp.example.test/jwks.json' })).toMatch(/JWT_PUBLIC_KEY, JWT_JWKS_URL: set one of them/);
  });

  it('wants https for JWT_JWKS_URL unless the host is loopback', () => {
    expect(problems({ JWT_JWKS_URL: 'http://idp.example.test/jwks.json' })).toMatch(/JWT_JWKS_URL: must be https/);
    for (const url of ['https://idp.example.test/jwks.json', 'http://127.0.0.1:8080/jwks', 'http://localhost/jwks', 'http://[::1]:9/jwks']) {
      expect(problems({ JWT_JWKS_URL: url }), url).toBe('');
    }
  });

  describe('a provider without both JWT_ISSUER and JWT_AUDIENCE', () => {
    const production = {
      NODE_ENV: 'production', DATABASE_URL: 'postgresql://db.internal/broker', REDIS_URL: 'rediss://cache.internal',
      JWT_SECRET: TEST_JWT_SECRET, CLOUDFLARE_API_TOKEN: 't', CLOUDFLARE_ACCOUNT_ID: 'a'.repeat(32),
      CLOUDFLARE_ZONE_ID: 'z'.repeat(32), TUNNEL_DOMAIN: 'tunnels.example.com',
    };
    const jwks = { JWT_JWKS_URL: 'https://idp.example.test/jwks.json' };

    it('is fatal in production, naming what is missing and why', () => {
      expect(problems({ ...production, ...jwks })).toBe(
        'JWT_ISSUER, JWT_AUDIENCE: required with JWT_JWKS_URL when NODE_ENV=production: without both, every token the identity provider ' +
          "signs for any application (a multi-tenant provider signs for other companies' too) is accepted as an access token here",
      );
      expect(problems({ ...production, JWT_PUBLIC_KEY: pem(rsa.publicKey), JWT_ISSUER: ISSUER })).toMatch(/^JWT_AUDIENCE: required with JWT_PUBLIC_KEY when NODE_ENV=production/);
      expect(problems({ ...production, ...jwks, JWT_AUDIENCE: AUDIENCE })).toMatch(/^JWT_ISSUER: required with JWT_JWKS_URL/);
      expect(problems({ ...production, ...jwks, JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE })).toBe('');
      expect(loadBootConfig({ ...production, ...jwks, JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE }).warnings).toEqual([]);
    });

    it('is allowed outside production, with a warning', () => {
      for (const env of [{ ...jwks }, { JWT_PUBLIC_KEY: pem(rsa.publicKey), JWT_AUDIENCE: AUDIENCE }]) {
        const config = loadBootConfig({ ...base, ...env });
        expect(config.warnings).toHaveLength(1);
        expect(config.warnings[0]).toMatch(/^JWT_ISSUER(, JWT_AUDIENCE)?: should be set with JWT_(JWKS_URL|PUBLIC_KEY): without both, every token/);
      }
      expect(loadBootConfig({ ...base, ...jwks, JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE }).warnings).toEqual([]);
      expect(loadBootConfig(base).warnings).toEqual([]);
    });
  });

  it('refuses issuer, audience or user-claim settings that would check nothing without a provider', () => {
    expect(problems({ JWT_ISSUER: ISSUER })).toMatch(/JWT_ISSUER: applies to identity-provider tokens only/);
    expect(problems({ JWT_AUDIENCE: AUDIENCE })).toMatch(/JWT_AUDIENCE: applies to identity-provider tokens only/);
    expect(problems({ JWT_USER_CLAIM: 'email' })).toMatch(/JWT_USER_CLAIM: applies to identity-provider tokens only/);
    expect(problems({ JWT_USER_CLAIM: 'sub' })).toBe('');
  });
});
