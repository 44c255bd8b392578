import { randomUUID } from 'node:crypto';
import Value from 'typebox/value';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TunnelEventType as PrismaEventTypes } from '../../src/generated/prisma/enums.js';
import { TunnelEventType } from '../../src/tunnels/schemas.js';
import { makeDue, startTestBroker, type TestBroker } from '../helpers/broker.js';

let broker: TestBroker;
beforeAll(async () => {
  // No SDK retries: each injected failure fails its call at once. A TTL far longer than the
  // file runs: no tunnel lapses unless a test makes it due.
  broker = await startTestBroker({ env: { CLOUDFLARE_MAX_RETRIES: '0', TUNNEL_TTL_SECONDS: '3600' } });
});
afterAll(async () => {
  await broker?.close();
});

const user = () => `user-${randomUUID().slice(0, 8)}`;

async function create(userId: string) {
  const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000 } });
  return res;
}

async function trail(tunnelId: string) {
  const events = await broker.app.prisma.tunnelEvent.findMany({ where: { tunnelId }, orderBy: { id: 'asc' } });
  return events.map((e) => ({ type: e.type, actor: e.actor, details: e.details }));
}

const getWithEvents = (userId: string, id: string, query = '?include=events') =>
  broker.app.inject({ method: 'GET', url: `/v1/tunnels/${id}${query}`, headers: broker.auth(userId) });

describe('the audit trail', () => {
  it('records a create and a delete by the owner, and GET ?include=events shows the history to the owner only', async () => {
    const alice = user();
    const created = await create(alice);
    expect(created.statusCode).toBe(201);
    const { tunnelId: id, cloudflaredToken } = created.json() as { tunnelId: string; cloudflaredToken: string };
    const row = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id } });

    const shown = await getWithEvents(alice, id);
    expect(shown.statusCode).toBe(200);
    expect(shown.json()).toMatchObject({ id, status: 'active' });
    expect(shown.json().events).toEqual([{
      type: 'created',
      actor: `user:${alice}`,
      at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      details: { hostname: row.hostname, port: 3000, cfTunnelId: row.cfTunnelId, dnsRecordId: row.dnsRecordId, access: { mode: 'public', emails: [] } },
    }]);
    // Without the parameter the body is as before.
    expect((await getWithEvents(alice, id, '')).json()).not.toHaveProperty('events');
    // Someone else's tunnel does not exist, history or not; an unknown include is bad input.
    expect((await getWithEvents(user(), id)).statusCode).toBe(404);
    const bad = await getWithEvents(alice, id, '?include=everything');
    expect(bad.statusCode).toBe(400);
    expect(bad.json().code).toBe('INVALID_INPUT');

    expect((await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${id}`, headers: broker.auth(alice) })).statusCode).toBe(204);
    expect(await trail(id)).toEqual([
      expect.objectContaining({ type: 'created', actor: `user:${alice}` }),
      { type: 'delete_requested', actor: `user:${alice}`, details: {} },
      { type: 'ended', actor: `user:${alice}`, details: { reason: 'deleted' } },
    ]);
    // Never a secret in the trail.
    expect(JSON.stringify(await trail(id))).not.toContain(cloudflaredToken);
    // A second DELETE changes nothing, so it records nothing.
    expect((await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${id}`, headers: broker.auth(alice) })).statusCode).toBe(204);
    expect(await trail(id)).toHaveLength(3);
    expect((await getWithEvents(alice, id)).statusCode).toBe(404);
  });

  it('records a create that failed upstream with the failing operation, then its rollback', async () => {
    const bob = user();
    const remove = broker.emulator.injectFault({ kind: 'error5xx', endpoint: 'dns.create', status: 500, times: 1 });
    const res = await create(bob);
    remove();
    expect(res.statusCode).toBe(502);
    const row = await broker.app.prisma.tunnel.findFirstOrThrow({ where: { ownerId: bob } });
    expect(row).toMatchObject({ status: 'ended', endReason: 'create_failed' });
    expect(await trail(row.id)).toEqual([
      { type: 'create_failed', actor: `user:${bob}`, details: { error: { operation: 'dns.create', kind: 'failed', status: 500, cloudflareCodes: [10001] } } },
      { type: 'ended', actor: `user:${bob}`, details: { reason: 'create_failed' } },
    ]);
  });

  it('records a create Cloudflare refused outright (so nothing was made upstream) as ended at once', async () => {
    const carol = user();
    // A 429 proves the create was not made, so the rollback has nothing to look for upstream.
    const remove = broker.emulator.injectFault({ kind: 'rateLimit', endpoint: 'tunnel.create', retryAfterSec: 1, times: 1 });
    const res = await create(carol);
    remove();
    expect(res.statusCode).toBe(503);
    const row = await broker.app.prisma.tunnel.findFirstOrThrow({ where: { ownerId: carol } });
    expect(await trail(row.id)).toEqual([
      { type: 'create_failed', actor: `user:${carol}`, details: { error: { operation: 'tunnel.create', kind: 'rate_limited', status: 429, cloudflareCodes: [971] } } },
      { type: 'ended', actor: `user:${carol}`, details: { reason: 'create_failed', nothingUpstream: true } },
    ]);
  });

  it('records a reaped tunnel: heartbeat_lapsed, then ended, both by the reaper', async () => {
    const dave = user();
    const { tunnelId: id } = (await create(dave)).json() as { tunnelId: string };
    await makeDue(broker, id);

    expect((await broker.app.reaper!.sweep()).ended).toBe(1);

    expect(await trail(id)).toEqual([
      expect.objectContaining({ type: 'created', actor: `user:${dave}` }),
      { type: 'heartbeat_lapsed', actor: 'reaper', details: { ttlSeconds: broker.config.tunnels.ttlSeconds } },
      { type: 'ended', actor: 'reaper', details: { reason: 'heartbeat_lapsed' } },
    ]);
  });

  it('records a create abandoned mid-way (its broker died) as create_failed by the reaper', async () => {
    const id = randomUUID();
    await broker.app.prisma.tunnel.create({ data: { id, ownerId: user(), slug: `a${id.slice(0, 8)}`, hostname: `a${id.slice(0, 8)}.tunnels.test`, port: 1, status: 'creating' } });
    await makeDue(broker, id);

    expect((await broker.app.reaper!.sweep()).ended).toBe(1);

    expect(await trail(id)).toEqual([
      { type: 'create_failed', actor: 'reaper', details: { reason: 'create_abandoned' } },
      { type: 'ended', actor: 'reaper', details: { reason: 'create_failed' } },
    ]);
  });

  it('records an end that keeps failing once, not on every retry, and who finally ended it', async () => {
    const erin = user();
    const { tunnelId: id } = (await create(erin)).json() as { tunnelId: string };
    const remove = broker.emulator.injectFault({ kind: 'error5xx', endpoint: 'tunnel.delete', status: 500 });
    try {
      expect((await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${id}`, headers: broker.auth(erin) })).statusCode).toBe(502);
      for (let retry = 0; retry < 2; retry++) {
        await makeDue(broker, id);
        expect((await broker.app.reaper!.sweep()).retryScheduled).toBe(1);
      }
    } finally {
      remove();
    }
    await makeDue(broker, id);
    expect((await broker.app.reaper!.sweep()).ended).toBe(1);

    const events = await trail(id);
    expect(events.map((e) => [e.type, e.actor])).toEqual([
      ['created', `user:${erin}`],
      ['delete_requested', `user:${erin}`],
      ['end_failed', `user:${erin}`],
      ['ended', 'reaper'],
    ]);
    expect(events[2]!.details).toEqual({
      reason: 'deleted',
      error: { operation: 'tunnel.delete', kind: 'failed', status: 500, cloudflareCodes: [10001] },
      retryInSeconds: expect.any(Number),
    });
  });

  it('the API schema names exactly the event types the database knows', () => {
    const schemaTypes = Object.values(PrismaEventTypes).filter((t) => Value.Check(TunnelEventType, t));
    expect(schemaTypes).toEqual(Object.values(PrismaEventTypes));
    expect(Value.Check(TunnelEventType, 'something_else')).toBe(false);
    expect((TunnelEventType as { anyOf: unknown[] }).anyOf).toHaveLength(Object.values(PrismaEventTypes).length);
  });
});
