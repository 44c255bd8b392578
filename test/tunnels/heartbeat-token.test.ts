import { randomUUID } from 'node:crypto';
import { createDecoder, createSigner } from 'fast-jwt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  deriveHeartbeatTokenKey,
  HEARTBEAT_SCOPE,
  HEARTBEAT_TOKEN_RENEW_BEFORE_SECONDS,
  HEARTBEAT_TOKEN_TTL_SECONDS,
  HEARTBEAT_TOKEN_TYP,
  HeartbeatTokens,
} from '../../src/auth/heartbeat-token.js';
import { REDACTED } from '../../src/logging/logger.js';
import { eventually, startTestBroker, TEST_JWT_SECRET, type TestBroker, deadlineOf, isHeartbeating } from '../helpers/broker.js';

let broker: TestBroker;
beforeAll(async () => {
  // Trace level: every line the broker can write is captured for the redaction check.
  broker = await startTestBroker({ env: { LOG_LEVEL: 'trace', MAX_TUNNELS_PER_USER: '20', CREATE_RATE_LIMIT_PER_MINUTE: '1000' } });
});
afterAll(async () => {
  await broker?.close();
});

const decode = createDecoder({ complete: true });
const nowSec = () => Math.floor(Date.now() / 1000);
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

interface Created {
  tunnelId: string;
  heartbeatToken: string;
  cloudflaredToken: string;
}

async function createTunnel(userId: string): Promise<Created> {
  const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000 } });
  expect(res.statusCode).toBe(201);
  return res.json() as Created;
}

function heartbeat(tunnelId: string, headers: Record<string, string>) {
  return broker.app.inject({ method: 'POST', url: `/v1/tunnels/${tunnelId}/heartbeat`, headers });
}

/** Re-encodes a token's header and claims with the original signature (a forgery attempt). */
function tamper(token: string, edit: { header?: object; claims?: object }): string {
  const [h, p, s] = token.split('.') as [string, string, string];
  const header = { ...JSON.parse(Buffer.from(h, 'base64url').toString()), ...edit.header };
  const claims = { ...JSON.parse(Buffer.from(p, 'base64url').toString()), ...edit.claims };
  return `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
}

describe('the heartbeat token in the create response', () => {
  it('is a JWT of its own type, scoped to the tunnel and its owner, valid for 30 days', async () => {
    const userId = `owner-${randomUUID()}`;
    const { tunnelId, heartbeatToken } = await createTunnel(userId);
    const { header, payload } = decode(heartbeatToken);
    expect(header).toMatchObject({ alg: 'HS256', typ: HEARTBEAT_TOKEN_TYP });
    expect(payload).toMatchObject({ sub: userId, tid: tunnelId, scope: HEARTBEAT_SCOPE });
    expect(payload.exp - nowSec()).toBeGreaterThan(HEARTBEAT_TOKEN_TTL_SECONDS - 60);
    expect(payload.exp - nowSec()).toBeLessThanOrEqual(HEARTBEAT_TOKEN_TTL_SECONDS);
  });

  it('heartbeats its tunnel (any case of the id), and the owner\'s access token still does too', async () => {
    const userId = `owner-${randomUUID()}`;
    const { tunnelId, heartbeatToken } = await createTunnel(userId);
    const first = await heartbeat(tunnelId, bearer(heartbeatToken));
    expect(first.statusCode).toBe(200);
    expect(first.json().ok).toBe(true);
    expect(Date.parse(first.json().expiresAt)).toBeGreaterThan(Date.now());
    // A fresh token is not renewed: the agent keeps using the one it has.
    expect(first.json().heartbeatToken).toBeUndefined();
    expect((await heartbeat(tunnelId.toUpperCase(), bearer(heartbeatToken))).statusCode).toBe(200);
    expect((await heartbeat(tunnelId, broker.auth(userId))).statusCode).toBe(200);
  });

  it('keeps the heartbeat off PostgreSQL: it works with the tunnels table gone', async () => {
    const { tunnelId, heartbeatToken } = await createTunnel(`owner-${randomUUID()}`);
    await broker.app.prisma.$executeRawUnsafe('ALTER TABLE tunnels RENAME TO tunnels_hidden');
    try {
      // Twice: the first verification and the cached one.
      expect((await heartbeat(tunnelId, bearer(heartbeatToken))).statusCode).toBe(200);
      expect((await heartbeat(tunnelId, bearer(heartbeatToken))).statusCode).toBe(200);
    } finally {
      await broker.app.prisma.$executeRawUnsafe('ALTER TABLE tunnels_hidden RENAME TO tunnels');
    }
  });

  it('is never in list or get output', async () => {
    const userId = `owner-${randomUUID()}`;
    const { tunnelId, heartbeatToken } = await createTunnel(userId);
    const list = await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: broker.auth(userId) });
    const one = await broker.app.inject({ method: 'GET', url: `/v1/tunnels/${tunnelId}`, headers: broker.auth(userId) });
    expect(list.statusCode).toBe(200);
    expect(one.statusCode).toBe(200);
    for (const body of [list.body, one.body]) {
      expect(body).not.toContain(heartbeatToken);
      expect(body).not.toContain('heartbeatToken');
    }
  });

  it('is replayed, still working, by an idempotent retry of the create', async () => {
    const userId = `owner-${randomUUID()}`;
    const headers = { ...broker.auth(userId), 'idempotency-key': randomUUID() };
    const first = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers, payload: { port: 3000 } });
    const replay = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers, payload: { port: 3000 } });
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.json().heartbeatToken).toBe(first.json().heartbeatToken);
    expect((await heartbeat(first.json().tunnelId, bearer(replay.json().heartbeatToken))).statusCode).toBe(200);
  });
});

describe('a heartbeat token can do nothing else', () => {
  let userId: string;
  let tunnel: Created;
  let sibling: Created;
  beforeAll(async () => {
    userId = `owner-${randomUUID()}`;
    tunnel = await createTunnel(userId);
    sibling = await createTunnel(userId);
  });

  const elsewhere = (): Array<[string, { method: 'GET' | 'POST' | 'DELETE'; url: string; payload?: object }]> => [
    ['create a tunnel', { method: 'POST', url: '/v1/tunnels', payload: { port: 3000 } }],
    ['list tunnels', { method: 'GET', url: '/v1/tunnels' }],
    ['get its own tunnel', { method: 'GET', url: `/v1/tunnels/${tunnel.tunnelId}` }],
    ['delete its own tunnel', { method: 'DELETE', url: `/v1/tunnels/${tunnel.tunnelId}` }],
    ['get another tunnel of the same owner', { method: 'GET', url: `/v1/tunnels/${sibling.tunnelId}` }],
    ['heartbeat another tunnel of the same owner', { method: 'POST', url: `/v1/tunnels/${sibling.tunnelId}/heartbeat` }],
    ['heartbeat a tunnel that does not exist', { method: 'POST', url: `/v1/tunnels/${randomUUID()}/heartbeat` }],
    ['heartbeat a tunnel id that is not a UUID', { method: 'POST', url: '/v1/tunnels/not-a-uuid/heartbeat' }],
  ];

  it('is 403 FORBIDDEN on every other route and tunnel, and changes nothing', async () => {
    const siblingBefore = await deadlineOf(broker.redis, sibling.tunnelId);
    for (const [what, request] of elsewhere()) {
      const res = await broker.app.inject({ ...request, headers: bearer(tunnel.heartbeatToken) });
      expect(res.statusCode, what).toBe(403);
      expect(res.json(), what).toMatchObject({ code: 'FORBIDDEN', message: expect.any(String) });
      expect(res.headers['www-authenticate'], what).toBe('Bearer error="insufficient_scope"');
    }
    // Nothing was created, deleted, or kept alive by those requests.
    const list = await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: broker.auth(userId) });
    expect(list.json().tunnels.map((t: { id: string }) => t.id).sort()).toEqual([tunnel.tunnelId, sibling.tunnelId].sort());
    expect(list.json().tunnels.every((t: { status: string }) => t.status === 'active')).toBe(true);
    expect(await deadlineOf(broker.redis, sibling.tunnelId)).toBe(siblingBefore);
  });

  it('cannot be passed off as an access token by re-typing it, nor the reverse', async () => {
    // Without its typ it is routed as an access token: a different key, so the signature fails.
    const retyped = tamper(tunnel.heartbeatToken, { header: { typ: 'JWT' } });
    expect((await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: bearer(retyped) })).statusCode).toBe(401);
    expect((await heartbeat(tunnel.tunnelId, bearer(retyped))).statusCode).toBe(401);
    // An access token given the heartbeat typ is checked with the heartbeat key: refused.
    const accessAsHeartbeat = tamper(broker.token(userId), { header: { typ: HEARTBEAT_TOKEN_TYP }, claims: { tid: tunnel.tunnelId, scope: HEARTBEAT_SCOPE } });
    expect((await heartbeat(tunnel.tunnelId, bearer(accessAsHeartbeat))).statusCode).toBe(401);
  });

  it('keys are separate: heartbeat claims signed with JWT_SECRET, or access claims signed with the heartbeat key, are 401', async () => {
    const exp = nowSec() + 3600;
    const withSecret = createSigner({ key: TEST_JWT_SECRET, algorithm: 'HS256', header: { alg: 'HS256', typ: HEARTBEAT_TOKEN_TYP } })({ sub: userId, tid: tunnel.tunnelId, scope: HEARTBEAT_SCOPE, exp });
    expect((await heartbeat(tunnel.tunnelId, bearer(withSecret))).statusCode).toBe(401);
    // The same claims without the typ header go to the access verifier, which refuses the scope.
    const scopedAccess = createSigner({ key: TEST_JWT_SECRET, algorithm: 'HS256' })({ sub: userId, tid: tunnel.tunnelId, scope: HEARTBEAT_SCOPE, exp });
    expect((await heartbeat(tunnel.tunnelId, bearer(scopedAccess))).statusCode).toBe(401);
    const heartbeatKey = deriveHeartbeatTokenKey(TEST_JWT_SECRET);
    const accessWithHeartbeatKey = createSigner({ key: heartbeatKey, algorithm: 'HS256' })({ sub: userId, exp });
    for (const url of ['/v1/tunnels', `/v1/tunnels/${tunnel.tunnelId}`]) {
      expect((await broker.app.inject({ method: 'GET', url, headers: bearer(accessWithHeartbeatKey) })).statusCode).toBe(401);
    }
    expect((await heartbeat(tunnel.tunnelId, bearer(accessWithHeartbeatKey))).statusCode).toBe(401);
    // The control: the same signer with the right claims does make a working heartbeat token.
    const genuine = createSigner({ key: heartbeatKey, algorithm: 'HS256', header: { alg: 'HS256', typ: HEARTBEAT_TOKEN_TYP } })({ sub: userId, tid: tunnel.tunnelId, scope: HEARTBEAT_SCOPE, exp });
    expect((await heartbeat(tunnel.tunnelId, bearer(genuine))).statusCode).toBe(200);
  });

  it('is 401 when tampered with or expired', async () => {
    const [h, p, s] = tunnel.heartbeatToken.split('.') as [string, string, string];
    const flipped = `${h}.${p}.${s.slice(0, -2)}${s.endsWith('AA') ? 'BB' : 'AA'}`;
    const cases: Array<[string, string]> = [
      ['a changed signature', flipped],
      ['another tunnel id in the claims', tamper(tunnel.heartbeatToken, { claims: { tid: sibling.tunnelId } })],
      ['another owner in the claims', tamper(tunnel.heartbeatToken, { claims: { sub: 'mallory' } })],
      ['a later expiry in the claims', tamper(tunnel.heartbeatToken, { claims: { exp: nowSec() + 10 * 365 * 86_400 } })],
      ['alg none', tamper(tunnel.heartbeatToken, { header: { alg: 'none' } }).replace(/[^.]+$/, '')],
      ['expired', createSigner({ key: deriveHeartbeatTokenKey(TEST_JWT_SECRET), algorithm: 'HS256', header: { alg: 'HS256', typ: HEARTBEAT_TOKEN_TYP } })({ sub: userId, tid: tunnel.tunnelId, scope: HEARTBEAT_SCOPE, exp: nowSec() - 5 })],
      ['signed with another JWT_SECRET', new HeartbeatTokens('another-secret-that-is-at-least-32-characters').sign(userId, tunnel.tunnelId)],
    ];
    for (const [what, token] of cases) {
      const res = await heartbeat(what === 'another tunnel id in the claims' ? sibling.tunnelId : tunnel.tunnelId, bearer(token));
      expect(res.statusCode, what).toBe(401);
      expect(res.json().code, what).toBe('UNAUTHORIZED');
    }
  });

  it("does not widen an access token: another user's access token still cannot heartbeat the tunnel", async () => {
    expect((await heartbeat(tunnel.tunnelId, broker.auth(`someone-else-${randomUUID()}`))).statusCode).toBe(404);
    expect((await heartbeat(tunnel.tunnelId, bearer(tunnel.heartbeatToken))).statusCode).toBe(200);
  });
});

describe('renewal', () => {
  it('answers a heartbeat made with a token close to its expiry with a fresh one, which works', async () => {
    const userId = `owner-${randomUUID()}`;
    const { tunnelId } = await createTunnel(userId);
    // Same secret, so the broker accepts it; a lifetime inside the renewal window.
    const ageing = new HeartbeatTokens(TEST_JWT_SECRET, { ttlSeconds: HEARTBEAT_TOKEN_RENEW_BEFORE_SECONDS - 60 }).sign(userId, tunnelId);
    const res = await heartbeat(tunnelId, bearer(ageing));
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ ok: true, expiresAt: expect.any(String) });
    const renewed = res.json().heartbeatToken as string;
    expect(renewed).toEqual(expect.any(String));
    expect(decode(renewed).payload).toMatchObject({ sub: userId, tid: tunnelId, scope: HEARTBEAT_SCOPE });
    expect(decode(renewed).payload.exp - nowSec()).toBeGreaterThan(HEARTBEAT_TOKEN_TTL_SECONDS - 60);
    const next = await heartbeat(tunnelId, bearer(renewed));
    expect(next.statusCode).toBe(200);
    expect(next.json().heartbeatToken).toBeUndefined();
    // An access token's heartbeat never hands out a heartbeat token.
    expect((await heartbeat(tunnelId, broker.auth(userId))).json().heartbeatToken).toBeUndefined();
  });

  it('renews nothing for a tunnel that has ended', async () => {
    const userId = `owner-${randomUUID()}`;
    const { tunnelId } = await createTunnel(userId);
    expect((await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${tunnelId}`, headers: broker.auth(userId) })).statusCode).toBe(204);
    const ageing = new HeartbeatTokens(TEST_JWT_SECRET, { ttlSeconds: 60 }).sign(userId, tunnelId);
    const res = await heartbeat(tunnelId, bearer(ageing));
    expect(res.statusCode).toBe(404);
    expect(res.body).not.toContain('heartbeatToken');
  });
});

describe('the heartbeat token dies with its tunnel', () => {
  async function expectDeadAndBuried(tunnelId: string, heartbeatToken: string) {
    for (let i = 0; i < 2; i++) {
      const res = await heartbeat(tunnelId, bearer(heartbeatToken));
      expect(res.statusCode).toBe(404);
      expect(res.json().code).toBe('TUNNEL_NOT_FOUND');
    }
    // Nothing was resurrected: no heartbeat key, no deadline, the row stays ended.
    expect(await isHeartbeating(broker.redis, tunnelId)).toBe(false);
    expect(await deadlineOf(broker.redis, tunnelId)).toBeNull();
    expect((await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: tunnelId } })).status).toBe('ended');
  }

  it('after DELETE, heartbeats with it are 404 and bring nothing back', async () => {
    const userId = `owner-${randomUUID()}`;
    const { tunnelId, heartbeatToken } = await createTunnel(userId);
    expect((await heartbeat(tunnelId, bearer(heartbeatToken))).statusCode).toBe(200);
    expect((await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${tunnelId}`, headers: broker.auth(userId) })).statusCode).toBe(204);
    await expectDeadAndBuried(tunnelId, heartbeatToken);
  });

  it('after the reaper ends it, heartbeats with it are 404 and bring nothing back', async () => {
    const userId = `owner-${randomUUID()}`;
    const { tunnelId, heartbeatToken } = await createTunnel(userId);
    // What a lapse looks like to the reaper: the tunnel's deadline has passed.
    await broker.app.heartbeats.scheduleEnd(tunnelId, 0);
    await broker.app.reaper!.sweep();
    await eventually(async () => (await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: tunnelId } })).status === 'ended', { what: 'the tunnel to be reaped' });
    await expectDeadAndBuried(tunnelId, heartbeatToken);
  });
});

describe('a lapsed tunnel (2 s TTL)', () => {
  let short: TestBroker;
  beforeAll(async () => {
    short = await startTestBroker({ env: { TUNNEL_TTL_SECONDS: '2', HEARTBEAT_INTERVAL_SECONDS: '1' } });
  });
  afterAll(async () => {
    await short?.close();
  });

  it('refuses its heartbeat token once the heartbeat lapsed, before and after the reaper runs', async () => {
    const userId = `owner-${randomUUID()}`;
    const created = await short.app.inject({ method: 'POST', url: '/v1/tunnels', headers: short.auth(userId), payload: { port: 3000 } });
    const { tunnelId, heartbeatToken } = created.json() as Created;
    await eventually(async () => !(await isHeartbeating(short.redis, tunnelId)), { timeoutMs: 5_000, what: 'the heartbeat to lapse' });
    const hb = () => short.app.inject({ method: 'POST', url: `/v1/tunnels/${tunnelId}/heartbeat`, headers: bearer(heartbeatToken) });
    expect((await hb()).statusCode).toBe(404);
    await eventually(async () => {
      await short.app.reaper!.sweep();
      return (await short.app.prisma.tunnel.findUniqueOrThrow({ where: { id: tunnelId } })).status === 'ended';
    }, { timeoutMs: 5_000, what: 'the tunnel to be reaped' });
    expect((await hb()).statusCode).toBe(404);
    expect(await isHeartbeating(short.redis, tunnelId)).toBe(false);
    expect((await short.app.prisma.tunnel.findUniqueOrThrow({ where: { id: tunnelId } })).endReason).toBe('heartbeat_lapsed');
  });
});

describe('logs', () => {
  it('never contain a heartbeat token, and censor one that is logged by mistake', async () => {
    const userId = `owner-${randomUUID()}`;
    const { tunnelId, heartbeatToken } = await createTunnel(userId);
    await heartbeat(tunnelId, bearer(heartbeatToken));
    await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: bearer(heartbeatToken) });
    await heartbeat(randomUUID(), bearer(heartbeatToken));
    const ageing = new HeartbeatTokens(TEST_JWT_SECRET, { ttlSeconds: 60 }).sign(userId, tunnelId);
    const renewed = (await heartbeat(tunnelId, bearer(ageing))).json().heartbeatToken as string;
    await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${tunnelId}`, headers: broker.auth(userId) });
    await heartbeat(tunnelId, bearer(heartbeatToken));
    broker.app.log.info({ heartbeatToken, nested: { heartbeatToken } }, 'deliberate heartbeat token');

    const signature = heartbeatToken.split('.')[2]!;
    for (const secret of [heartbeatToken, signature, ageing, renewed]) expect(broker.logs.raw).not.toContain(secret);
    const deliberate = broker.logs.lines.find((l) => l.msg === 'deliberate heartbeat token') as Record<string, any>;
    expect(deliberate.heartbeatToken).toBe(REDACTED);
    expect(deliberate.nested.heartbeatToken).toBe(REDACTED);
  });
});
