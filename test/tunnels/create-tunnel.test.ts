import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { TEST_DOMAIN, useTestBroker } from '../helpers/broker.js';

const broker = useTestBroker();

const user = () => `user-${randomUUID()}`;

function create(userId: string, payload: unknown, headers: Record<string, string> = {}) {
  return broker.app.inject({
    method: 'POST',
    url: '/v1/tunnels',
    headers: { ...broker.auth(userId), 'content-type': 'application/json', ...headers },
    payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
  });
}

describe('POST /v1/tunnels', () => {
  it('creates a tunnel upstream and returns hostname, cloudflared token and heartbeat interval', async () => {
    const userId = user();
    const res = await create(userId, { port: 3000, requestedSlug: 'My-App-' + userId.slice(5, 13) });
    expect(res.statusCode).toBe(201);
    const body = res.json();
    const slug = ('my-app-' + userId.slice(5, 13)).toLowerCase();
    expect(body).toMatchObject({ hostname: `${slug}.${TEST_DOMAIN}`, heartbeatIntervalSec: 20, slug, port: 3000, url: `https://${slug}.${TEST_DOMAIN}` });
    expect(body.tunnelId).toMatch(/^[0-9a-f-]{36}$/);
    expect(new Date(body.expiresAt).getTime()).toBeGreaterThan(Date.now() + 50_000);

    // The token is cloudflared's: base64 of {a: account, t: tunnel id, s: secret}.
    const decoded = JSON.parse(Buffer.from(body.cloudflaredToken, 'base64').toString('utf8'));
    expect(decoded.a).toBe(broker.emulator.accountId);
    expect(Buffer.from(decoded.s, 'base64').length).toBeGreaterThanOrEqual(32);

    // Upstream: a remotely managed tunnel named after our row, its ingress, and a proxied CNAME.
    const upstream = broker.emulator.liveTunnels().find((t) => t.id === decoded.t);
    expect(upstream?.name).toBe(`${broker.config.cloudflare.tunnelNamePrefix}${body.tunnelId}`);
    expect(upstream?.config_src).toBe('cloudflare');
    expect(broker.emulator.configuration(decoded.t)).toMatchObject({
      config: { ingress: [{ hostname: body.hostname, service: 'http://localhost:3000' }, { service: 'http_status:404' }] },
    });
    const record = broker.emulator.dnsRecords().find((r) => r.name === body.hostname);
    expect(record).toMatchObject({ type: 'CNAME', content: `${decoded.t}.cfargotunnel.com`, proxied: true });

    const row = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: body.tunnelId } });
    expect(row).toMatchObject({ ownerId: userId, status: 'active', cfTunnelId: decoded.t, dnsRecordId: record?.id, port: 3000 });
  });

  it('generates a random DNS-safe slug when none is requested', async () => {
    const res = await create(user(), { port: 8080 });
    expect(res.statusCode).toBe(201);
    const { slug, hostname } = res.json();
    expect(slug).toMatch(/^[a-z0-9]{10}$/);
    expect(hostname).toBe(`${slug}.${TEST_DOMAIN}`);
  });

  it('takes the token from the create response: two sequential upstream round trips, no token fetch', async () => {
    const before = broker.emulator.count('tunnel.token');
    const res = await create(user(), { port: 1 });
    expect(res.statusCode).toBe(201);
    expect(broker.emulator.count('tunnel.token')).toBe(before);
  });

  it('ignores unknown fields', async () => {
    const res = await create(user(), { port: 65535, colour: 'blue', nested: { a: 1 } });
    expect(res.statusCode).toBe(201);
  });

  describe('INVALID_INPUT', () => {
    const cases: Array<[string, unknown, Record<string, string>?]> = [
      ['a missing body', ''],
      ['malformed JSON', '{"port": 30'],
      ['a JSON array', '[3000]'],
      ['a JSON string', '"3000"'],
      ['JSON null', 'null'],
      ['a missing port', { requestedSlug: 'abc' }],
      ['a port given as a string', { port: '3000' }],
      ['a port given as null', { port: null }],
      ['a port given as a boolean', { port: true }],
      ['a slug that is not a string', { port: 3000, requestedSlug: 42 }],
      ['an empty slug', { port: 3000, requestedSlug: '' }],
      ['a slug with a dot', { port: 3000, requestedSlug: 'a.b' }],
      ['a slug with an underscore', { port: 3000, requestedSlug: 'a_b' }],
      ['a slug starting with a hyphen', { port: 3000, requestedSlug: '-ab' }],
      ['a slug ending with a hyphen', { port: 3000, requestedSlug: 'ab-' }],
      ['a slug of 64 characters', { port: 3000, requestedSlug: 'a'.repeat(64) }],
      ['a punycode slug', { port: 3000, requestedSlug: 'xn--80ak6aa92e' }],
      ['a punycode slug in capitals', { port: 3000, requestedSlug: 'XN--80ak6aa92e' }],
      ['a slug with unicode', { port: 3000, requestedSlug: 'caf\u00e9' }],
    ];
    for (const [name, payload] of cases) {
      it(`rejects ${name}`, async () => {
        const res = await create(user(), payload);
        expect(res.statusCode).toBe(400);
        expect(res.json()).toMatchObject({ code: 'INVALID_INPUT', message: expect.any(String) });
      });
    }

    it('rejects a request with no body and no content type', async () => {
      const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(user()) });
      expect(res.statusCode).toBe(400);
      expect(res.json().code).toBe('INVALID_INPUT');
    });
  });

  describe('INVALID_PORT', () => {
    for (const port of [0, 65536, -1, 3000.5, 1e10, -0.5]) {
      it(`rejects port ${port}`, async () => {
        const res = await create(user(), { port });
        expect(res.statusCode).toBe(400);
        expect(res.json()).toMatchObject({ code: 'INVALID_PORT' });
      });
    }

    it('accepts the edges 1 and 65535', async () => {
      const userId = user();
      expect((await create(userId, { port: 1 })).statusCode).toBe(201);
      expect((await create(userId, { port: 65535 })).statusCode).toBe(201);
    });
  });

  describe('TUNNEL_SLUG_CONFLICT', () => {
    it('refuses a slug held by a live tunnel of any user, case-insensitively', async () => {
      const slug = `taken-${randomUUID().slice(0, 8)}`;
      expect((await create(user(), { port: 3000, requestedSlug: slug })).statusCode).toBe(201);
      const res = await create(user(), { port: 3000, requestedSlug: slug.toUpperCase() });
      expect(res.statusCode).toBe(409);
      expect(res.json().code).toBe('TUNNEL_SLUG_CONFLICT');
    });

    it('frees the slug the moment its tunnel has ended', async () => {
      const slug = `reuse-${randomUUID().slice(0, 8)}`;
      const owner = user();
      const first = await create(owner, { port: 3000, requestedSlug: slug });
      expect(first.statusCode).toBe(201);
      const del = await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${first.json().tunnelId}`, headers: broker.auth(owner) });
      expect(del.statusCode).toBe(204);
      const second = await create(user(), { port: 4000, requestedSlug: slug });
      expect(second.statusCode).toBe(201);
    });

    for (const reserved of ['www', 'api', 'admin', 'mail', 'login', 'Billing']) {
      it(`refuses the reserved name ${reserved}`, async () => {
        const res = await create(user(), { port: 3000, requestedSlug: reserved });
        expect(res.statusCode).toBe(409);
        expect(res.json()).toMatchObject({ code: 'TUNNEL_SLUG_CONFLICT', details: { reason: 'reserved' } });
      });
    }
  });

  describe('TUNNEL_LIMIT_EXCEEDED', () => {
    it('refuses a sixth live tunnel and allows one again after a delete', async () => {
      const userId = user();
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const res = await create(userId, { port: 3000 + i });
        expect(res.statusCode).toBe(201);
        ids.push(res.json().tunnelId);
      }
      const sixth = await create(userId, { port: 3010 });
      expect(sixth.statusCode).toBe(429);
      expect(sixth.json().code).toBe('TUNNEL_LIMIT_EXCEEDED');

      // Another user is unaffected.
      expect((await create(user(), { port: 3000 })).statusCode).toBe(201);

      await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${ids[0]}`, headers: broker.auth(userId) });
      expect((await create(userId, { port: 3011 })).statusCode).toBe(201);
    });
  });

  it('never returns the cloudflared token from list or get', async () => {
    const userId = user();
    const created = (await create(userId, { port: 3000 })).json();
    const list = await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: broker.auth(userId) });
    const one = await broker.app.inject({ method: 'GET', url: `/v1/tunnels/${created.tunnelId}`, headers: broker.auth(userId) });
    for (const res of [list, one]) {
      expect(res.statusCode).toBe(200);
      expect(res.body).not.toContain(created.cloudflaredToken);
      expect(res.body).not.toMatch(/token/i);
    }
  });
});
