import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { isAppError } from '../../src/errors/catalogue.js';
import { createPrismaClient } from '../../src/plugins/prisma.js';
import { TunnelRefResolver } from '../../src/tunnels/tunnel-ref-resolver.js';
import { TEST_DOMAIN, useTestBroker } from '../helpers/broker.js';

// GET and DELETE /v1/tunnels/:tunnelId by the tunnel's id, hostname or slug, as clients
// written against the published API (rs-tunnel's CLI: `stop <hostname>`) and people name it.
const broker = useTestBroker({ env: { MAX_TUNNELS_PER_USER: '20', CREATE_RATE_LIMIT_PER_MINUTE: '1000' } });

const user = () => `user-${randomUUID()}`;
const slug = () => `ref-${randomUUID().slice(0, 8)}`;

interface Created {
  tunnelId: string;
  hostname: string;
  slug: string;
  heartbeatToken: string;
}

async function createTunnel(userId: string, requestedSlug = slug()): Promise<Created> {
  const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000, requestedSlug } });
  expect(res.statusCode).toBe(201);
  return res.json() as Created;
}

const get = (userId: string, ref: string) => broker.app.inject({ method: 'GET', url: `/v1/tunnels/${encodeURIComponent(ref)}`, headers: broker.auth(userId) });
const del = (userId: string, ref: string) => broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${encodeURIComponent(ref)}`, headers: broker.auth(userId) });
const status = async (id: string) => (await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id } })).status;

/** Every way the owner may name `t`. */
function namesOf(t: Created): string[] {
  return [t.tunnelId, t.tunnelId.toUpperCase(), t.hostname, `${t.hostname.toUpperCase()}.`, `https://${t.hostname}/`, t.slug, t.slug.toUpperCase()];
}

describe('GET /v1/tunnels/:tunnelId by id, hostname or slug', () => {
  it('finds the owner\'s tunnel by each, any case, with or without a trailing dot, or by its URL', async () => {
    const owner = user();
    const t = await createTunnel(owner);
    await createTunnel(owner);
    for (const name of namesOf(t)) {
      const res = await get(owner, name);
      expect(res.statusCode, name).toBe(200);
      expect(res.json(), name).toMatchObject({ id: t.tunnelId, hostname: t.hostname, slug: t.slug, status: 'active' });
    }
    // ?include=events works the same by name.
    const withEvents = await broker.app.inject({ method: 'GET', url: `/v1/tunnels/${t.hostname}?include=events`, headers: broker.auth(owner) });
    expect(withEvents.json().events.map((e: { type: string }) => e.type)).toEqual(['created']);
  });

  it("is 404 for another user's tunnel by each name, exactly as for an unknown one", async () => {
    const t = await createTunnel(user());
    const stranger = user();
    const unknown = await get(stranger, randomUUID());
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().code).toBe('TUNNEL_NOT_FOUND');
    for (const name of namesOf(t)) {
      const res = await get(stranger, name);
      expect(res.statusCode, name).toBe(404);
      expect(res.json(), name).toEqual(unknown.json());
    }
  });

  it('is 404 for an unknown slug or hostname, and for names no tunnel can have', async () => {
    const owner = user();
    const t = await createTunnel(owner);
    for (const name of [slug(), `${slug()}.${TEST_DOMAIN}`, `x.${t.hostname}`, `${t.slug}-`, 'a b', '%', 'xn--', TEST_DOMAIN, `.${TEST_DOMAIN}`, 'https://', '..x']) {
      const res = await get(owner, name);
      expect(res.statusCode, name).toBe(404);
      expect(res.json().code, name).toBe('TUNNEL_NOT_FOUND');
    }
  });

  it('is 404 for a hostname outside TUNNEL_DOMAIN, even one a live tunnel of the owner has', async () => {
    const owner = user();
    const t = await createTunnel(owner);
    // A tunnel made under an earlier TUNNEL_DOMAIN: its hostname is no longer one the broker gives out.
    const oldHostname = `${t.slug}.old-domain.example`;
    await broker.app.prisma.tunnel.update({ where: { id: t.tunnelId }, data: { hostname: oldHostname } });
    for (const name of [oldHostname, `${t.slug}.example.com`, `${t.slug}.tunnels.test.example.com`, `${t.slug}.${TEST_DOMAIN}.evil.example`]) {
      const res = await get(owner, name);
      expect(res.statusCode, name).toBe(404);
      expect(res.json().code, name).toBe('TUNNEL_NOT_FOUND');
    }
    // Its id and its slug still name it; the hostname under TUNNEL_DOMAIN does not: that is not its hostname.
    expect((await get(owner, t.tunnelId)).statusCode).toBe(200);
    expect((await get(owner, t.slug)).json()).toMatchObject({ id: t.tunnelId, hostname: oldHostname });
    expect((await get(owner, t.hostname)).statusCode).toBe(404);
  });

  it('finds the tunnel that has the name now: an ended tunnel\'s slug names the next one to take it', async () => {
    const owner = user();
    const first = await createTunnel(owner);
    expect((await del(owner, first.tunnelId)).statusCode).toBe(204);
    expect((await get(owner, first.slug)).statusCode).toBe(404);
    const second = await createTunnel(owner, first.slug);
    expect((await get(owner, first.hostname)).json()).toMatchObject({ id: second.tunnelId });
    expect((await get(owner, first.slug)).json()).toMatchObject({ id: second.tunnelId });
  });

  it("is still 403 with a heartbeat token, whatever the tunnel is named by", async () => {
    const owner = user();
    const t = await createTunnel(owner);
    for (const name of [t.tunnelId, t.hostname, t.slug]) {
      const res = await broker.app.inject({ method: 'GET', url: `/v1/tunnels/${name}`, headers: { authorization: `Bearer ${t.heartbeatToken}` } });
      expect(res.statusCode, name).toBe(403);
    }
  });
});

describe('DELETE /v1/tunnels/:tunnelId by id, hostname or slug', () => {
  it('ends the owner\'s tunnel named by each, upstream included', async () => {
    const owner = user();
    const keep = await createTunnel(owner);
    for (const pick of [(t: Created) => t.tunnelId.toUpperCase(), (t: Created) => `${t.hostname.toUpperCase()}.`, (t: Created) => `https://${t.hostname}/`, (t: Created) => t.slug]) {
      const t = await createTunnel(owner);
      const cfTunnelId = (await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: t.tunnelId } })).cfTunnelId;
      const name = pick(t);
      const res = await del(owner, name);
      expect(res.statusCode, name).toBe(204);
      expect(await status(t.tunnelId), name).toBe('ended');
      expect(broker.emulator.liveTunnels().some((u) => u.id === cfTunnelId), name).toBe(false);
    }
    expect(await status(keep.tunnelId)).toBe('active');
  });

  it("takes the request as rs-tunnel's CLI sends it: by hostname, with a JSON content type and no body", async () => {
    const owner = user();
    const t = await createTunnel(owner);
    const res = await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${t.hostname}`, headers: { ...broker.auth(owner), 'content-type': 'application/json', 'content-length': '0' } });
    expect(res.statusCode).toBe(204);
    expect(await status(t.tunnelId)).toBe('ended');
  });

  it("is 404 for another user's tunnel by each name, and leaves it alone", async () => {
    const t = await createTunnel(user());
    const stranger = user();
    for (const name of namesOf(t)) {
      const res = await del(stranger, name);
      expect(res.statusCode, name).toBe(404);
      expect(res.json().code, name).toBe('TUNNEL_NOT_FOUND');
    }
    expect(await status(t.tunnelId)).toBe('active');
  });

  it('is 404 for an unknown value and for a hostname outside TUNNEL_DOMAIN, ending nothing', async () => {
    const owner = user();
    const t = await createTunnel(owner);
    await broker.app.prisma.tunnel.update({ where: { id: t.tunnelId }, data: { hostname: `${t.slug}.old-domain.example` } });
    for (const name of [randomUUID(), slug(), `${slug()}.${TEST_DOMAIN}`, `${t.slug}.old-domain.example`, `${t.slug}.example.com`, 'not a name']) {
      const res = await del(owner, name);
      expect(res.statusCode, name).toBe(404);
      expect(res.json().code, name).toBe('TUNNEL_NOT_FOUND');
    }
    expect(await status(t.tunnelId)).toBe('active');
  });

  it('stays idempotent by id; by hostname or slug, an ended tunnel is no longer found (the name is free again)', async () => {
    const owner = user();
    const t = await createTunnel(owner);
    expect((await del(owner, t.hostname)).statusCode).toBe(204);
    expect((await del(owner, t.tunnelId)).statusCode).toBe(204);
    expect((await del(owner, t.hostname)).statusCode).toBe(404);
    expect((await del(owner, t.slug)).statusCode).toBe(404);
  });
});

describe('POST /v1/tunnels/:tunnelId/heartbeat', () => {
  it('stays by id only: by hostname or slug it is 404 with the access token, 403 with the heartbeat token', async () => {
    const owner = user();
    const t = await createTunnel(owner);
    for (const name of [t.hostname, t.slug]) {
      const byAccessToken = await broker.app.inject({ method: 'POST', url: `/v1/tunnels/${name}/heartbeat`, headers: broker.auth(owner) });
      expect(byAccessToken.statusCode, name).toBe(404);
      expect(byAccessToken.json().code, name).toBe('TUNNEL_NOT_FOUND');
      const byHeartbeatToken = await broker.app.inject({ method: 'POST', url: `/v1/tunnels/${name}/heartbeat`, headers: { authorization: `Bearer ${t.heartbeatToken}` } });
      expect(byHeartbeatToken.statusCode, name).toBe(403);
    }
  });
});

describe('TunnelRefResolver', () => {
  // A client that cannot reach PostgreSQL: what needs no query answers anyway, what needs one fails.
  const offline = createPrismaClient('postgresql://postgres@127.0.0.1:1/unreachable');
  const resolver = new TunnelRefResolver(offline, [TEST_DOMAIN]);
  afterAll(async () => {
    await offline.$disconnect().catch(() => {});
  });
  const outcome = (ref: string) => resolver.resolve('someone', ref).then((id) => ({ id }), (error: unknown) => ({ code: isAppError(error) ? error.code : 'query failed' }));

  it('answers an id, and 404s a name outside TUNNEL_DOMAIN or no slug could have, without a database query', async () => {
    const id = randomUUID();
    expect(await outcome(id.toUpperCase())).toEqual({ id });
    for (const ref of ['my-app.example.com', `my-app.${TEST_DOMAIN}.example.com`, `a.b.${TEST_DOMAIN}`, TEST_DOMAIN, 'not a slug', '  ']) {
      expect(await outcome(ref), ref).toEqual({ code: 'TUNNEL_NOT_FOUND' });
    }
  });

  it('queries for a hostname under TUNNEL_DOMAIN and for a slug (so the answers above did not)', async () => {
    for (const ref of [`my-app.${TEST_DOMAIN}`, 'my-app']) expect(await outcome(ref), ref).toEqual({ code: 'query failed' });
  });
});
