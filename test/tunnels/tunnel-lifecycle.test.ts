import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/access-token.js';
import { makeDue, useTestBroker, deadlineOf } from '../helpers/broker.js';

const broker = useTestBroker();

const user = () => `user-${randomUUID()}`;

async function createTunnel(userId: string, port = 3000) {
  const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port } });
  expect(res.statusCode).toBe(201);
  return res.json() as { tunnelId: string; hostname: string; slug: string; cloudflaredToken: string; expiresAt: string };
}

const heartbeat = (userId: string, id: string, headers: Record<string, string> = {}) =>
  broker.app.inject({ method: 'POST', url: `/v1/tunnels/${id}/heartbeat`, headers: { ...broker.auth(userId), ...headers } });

describe('POST /v1/tunnels/:id/heartbeat', () => {
  it('extends the expiry for the owner', async () => {
    const userId = user();
    const tunnel = await createTunnel(userId);
    const res = await heartbeat(userId, tunnel.tunnelId);
    expect(res.statusCode).toBe(200);
    // `ok: true` as the published API has it: clients written against it (rs-tunnel's CLI) require it.
    expect(res.json()).toEqual({ ok: true, expiresAt: expect.any(String) });
    const { expiresAt } = res.json();
    expect(new Date(expiresAt).getTime()).toBeGreaterThanOrEqual(new Date(tunnel.expiresAt).getTime());
    const deadline = await deadlineOf(broker.redis, tunnel.tunnelId);
    expect(deadline! - Date.now()).toBeGreaterThan(55_000);
  });

  it('accepts an empty JSON body from clients that always send a content type', async () => {
    const userId = user();
    const tunnel = await createTunnel(userId);
    const res = await heartbeat(userId, tunnel.tunnelId, { 'content-type': 'application/json' });
    expect(res.statusCode).toBe(200);
  });

  it("answers 404 for someone else's tunnel, exactly as for an unknown one", async () => {
    const owner = user();
    const tunnel = await createTunnel(owner);
    const other = await heartbeat(user(), tunnel.tunnelId);
    const unknown = await heartbeat(owner, randomUUID());
    expect(other.statusCode).toBe(404);
    expect(unknown.statusCode).toBe(404);
    expect(other.json()).toEqual(unknown.json());
    expect(other.json().code).toBe('TUNNEL_NOT_FOUND');
  });

  it('answers 404 for an ended tunnel and for an id that is not a UUID', async () => {
    const userId = user();
    const tunnel = await createTunnel(userId);
    expect((await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${tunnel.tunnelId}`, headers: broker.auth(userId) })).statusCode).toBe(204);
    expect((await heartbeat(userId, tunnel.tunnelId)).statusCode).toBe(404);
    const junk = await heartbeat(userId, 'not-a-uuid');
    expect(junk.statusCode).toBe(404);
    expect(junk.json().code).toBe('TUNNEL_NOT_FOUND');
  });

  it('touches Redis only: no PostgreSQL query per heartbeat', async () => {
    const userId = user();
    const tunnel = await createTunnel(userId);
    const [beforeRow] = await broker.app.prisma.$queryRaw<Array<{ count: bigint }>>`SELECT xact_commit + xact_rollback AS count FROM pg_stat_database WHERE datname = current_database()`;
    // Other files run in parallel, but on other databases: this counter is ours alone.
    for (let i = 0; i < 50; i++) expect((await heartbeat(userId, tunnel.tunnelId)).statusCode).toBe(200);
    const [afterRow] = await broker.app.prisma.$queryRaw<Array<{ count: bigint }>>`SELECT xact_commit + xact_rollback AS count FROM pg_stat_database WHERE datname = current_database()`;
    // Statistics are flushed lazily; the only transactions between the two reads are the reads themselves.
    expect(Number(afterRow!.count - beforeRow!.count)).toBeLessThan(5);
  });
});

describe('GET /v1/tunnels and GET /v1/tunnels/:id', () => {
  it("lists only the caller's tunnels that are not ended, with their expiry", async () => {
    const userId = user();
    const a = await createTunnel(userId, 3001);
    const b = await createTunnel(userId, 3002);
    await createTunnel(user(), 3003);
    await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${b.tunnelId}`, headers: broker.auth(userId) });

    const res = await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: broker.auth(userId) });
    expect(res.statusCode).toBe(200);
    const { tunnels } = res.json();
    expect(tunnels).toHaveLength(1);
    expect(tunnels[0]).toMatchObject({ id: a.tunnelId, hostname: a.hostname, slug: a.slug, port: 3001, status: 'active' });
    expect(Object.keys(tunnels[0]).sort()).toEqual(['access', 'createdAt', 'expiresAt', 'hostname', 'id', 'port', 'slug', 'status']);
    expect(new Date(tunnels[0].expiresAt).getTime()).toBeGreaterThan(Date.now());
  });

  it('gets one tunnel, and 404s for another user', async () => {
    const userId = user();
    const a = await createTunnel(userId, 3001);
    const mine = await broker.app.inject({ method: 'GET', url: `/v1/tunnels/${a.tunnelId}`, headers: broker.auth(userId) });
    expect(mine.statusCode).toBe(200);
    expect(mine.json()).toMatchObject({ id: a.tunnelId, port: 3001, status: 'active' });
    const theirs = await broker.app.inject({ method: 'GET', url: `/v1/tunnels/${a.tunnelId}`, headers: broker.auth(user()) });
    expect(theirs.statusCode).toBe(404);
    expect(theirs.json().code).toBe('TUNNEL_NOT_FOUND');
  });
});

describe('DELETE /v1/tunnels/:id', () => {
  it('removes the DNS record, connections and tunnel upstream and ends the row', async () => {
    const userId = user();
    const tunnel = await createTunnel(userId);
    const row = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: tunnel.tunnelId } });
    // A connected cloudflared: deleting the tunnel alone would fail with 1022.
    broker.emulator.addConnection(row.cfTunnelId!);

    const res = await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${tunnel.tunnelId}`, headers: broker.auth(userId) });
    expect(res.statusCode).toBe(204);
    expect(res.body).toBe('');
    expect(broker.emulator.liveTunnels().some((t) => t.id === row.cfTunnelId)).toBe(false);
    expect(broker.emulator.dnsRecords().some((r) => r.name === tunnel.hostname)).toBe(false);
    const ended = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: tunnel.tunnelId } });
    expect(ended).toMatchObject({ status: 'ended', endReason: 'deleted' });
    expect(ended.endedAt).toBeInstanceOf(Date);
    expect(await deadlineOf(broker.redis, tunnel.tunnelId)).toBeNull();
  });

  it('is idempotent for the owner, and 404s for others and unknown ids', async () => {
    const userId = user();
    const tunnel = await createTunnel(userId);
    const other = await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${tunnel.tunnelId}`, headers: broker.auth(user()) });
    expect(other.statusCode).toBe(404);
    expect(broker.emulator.liveTunnels().length).toBeGreaterThan(0);
    const first = await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${tunnel.tunnelId}`, headers: broker.auth(userId) });
    const again = await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${tunnel.tunnelId}`, headers: broker.auth(userId) });
    expect([first.statusCode, again.statusCode]).toEqual([204, 204]);
    const unknown = await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${randomUUID()}`, headers: broker.auth(userId) });
    expect(unknown.statusCode).toBe(404);
  });

  it('keeps the tunnel ending and reports the upstream failure when Cloudflare fails, then the reaper finishes it', async () => {
    const userId = user();
    const tunnel = await createTunnel(userId);
    const remove = broker.emulator.injectFault({ endpoint: 'tunnel.delete', kind: 'error5xx', status: 500 });
    const res = await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${tunnel.tunnelId}`, headers: broker.auth(userId) });
    expect(res.statusCode).toBe(502);
    expect(res.json().code).toBe('UPSTREAM_ERROR');
    expect(await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: tunnel.tunnelId } })).toMatchObject({ status: 'ending' });
    // Its heartbeat is refused from now on, and it is scheduled for a retry.
    expect((await heartbeat(userId, tunnel.tunnelId)).statusCode).toBe(404);
    expect(await deadlineOf(broker.redis, tunnel.tunnelId)).not.toBeNull();

    remove();
    // Make the retry due now rather than END_RETRY_SWEEPS sweeps later.
    await makeDue(broker, tunnel.tunnelId);
    await broker.app.reaper!.sweep();
    expect(await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: tunnel.tunnelId } })).toMatchObject({ status: 'ended', endReason: 'deleted' });
    const row = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: tunnel.tunnelId } });
    expect(broker.emulator.liveTunnels().some((t) => t.id === row.cfTunnelId)).toBe(false);
  });
});

describe('GET /healthz', () => {
  it('answers without auth', async () => {
    const res = await broker.app.inject({ method: 'GET', url: '/healthz' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: 'ok' });
  });
});

describe('unknown routes', () => {
  it('answer 404 NOT_FOUND in the error envelope', async () => {
    const res = await broker.app.inject({ method: 'GET', url: '/v2/nothing' });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toMatchObject({ code: 'NOT_FOUND', message: expect.any(String) });
  });
});

describe('routes the broker does not have under /v1', () => {
  // An older client probes optional routes (rs-tunnel's CLI: POST /v1/tunnels/:id/telemetry)
  // and turns the feature off on a 404; a 401 would have it retry forever.
  it('answer 404 NOT_FOUND before authentication: without a token, with a bad one, with a good one', async () => {
    const userId = user();
    const tunnel = await createTunnel(userId);
    const created = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3001 } });
    const tokens: Record<string, Record<string, string>> = {
      none: {},
      bad: { authorization: 'Bearer not-a-jwt' },
      forged: { authorization: `Bearer ${signAccessToken('another-secret-that-is-at-least-32-characters', userId)}` },
      good: broker.auth(userId),
      heartbeat: { authorization: `Bearer ${created.json().heartbeatToken as string}` },
    };
    const probes = [
      { method: 'POST', url: `/v1/tunnels/${tunnel.tunnelId}/telemetry` },
      { method: 'GET', url: `/v1/tunnels/${tunnel.hostname}/telemetry` },
      { method: 'POST', url: '/v1/auth/refresh' },
      { method: 'GET', url: '/v1/nothing' },
    ] as const;
    for (const probe of probes) {
      for (const [which, headers] of Object.entries(tokens)) {
        const res = await broker.app.inject({ ...probe, headers: { ...headers, 'content-type': 'application/json' }, payload: '{}' });
        expect(res.statusCode, `${probe.method} ${probe.url} (${which} token)`).toBe(404);
        expect(res.json(), `${probe.method} ${probe.url} (${which} token)`).toMatchObject({ code: 'NOT_FOUND' });
        expect(res.headers['www-authenticate']).toBeUndefined();
      }
    }
    // The routes it has still need the token: the 404s above are not auth switched off.
    expect((await broker.app.inject({ method: 'GET', url: `/v1/tunnels/${tunnel.tunnelId}` })).statusCode).toBe(401);
  });
});
