import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { eventually, type TestBroker } from '../helpers/broker.js';
import { type PrivatePostgres, startBrokerOnPrivatePostgres } from '../helpers/private-services.js';

let postgres: PrivatePostgres;
let broker: TestBroker;
beforeAll(async () => {
  ({ postgres, broker } = await startBrokerOnPrivatePostgres({
    // The TTL outlasts the outage however slow the restart is, so the tunnel heartbeated before it
    // is still alive after it (a shorter one made it lapse, correctly, under load). Reads are
    // polled below until PostgreSQL is back: not a test of READ_RATE_LIMIT_PER_MINUTE.
    env: { TUNNEL_TTL_SECONDS: '60', HEARTBEAT_INTERVAL_SECONDS: '1', REAPER_INTERVAL_SECONDS: '1', READ_RATE_LIMIT_PER_MINUTE: '100000' },
    startReaper: true,
  }));
}, 60_000);
afterAll(async () => {
  await broker?.close();
  await postgres?.close();
});

it('keeps heartbeats working while PostgreSQL is down, answers 503 for what needs it, and recovers after a restart', async () => {
  const userId = `user-${randomUUID()}`;
  const created = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000 } });
  expect(created.statusCode).toBe(201);
  const id = created.json().tunnelId;

  await postgres.stop();
  try {
    // Heartbeats touch Redis only.
    expect((await broker.app.inject({ method: 'POST', url: `/v1/tunnels/${id}/heartbeat`, headers: broker.auth(userId) })).statusCode).toBe(200);
    for (const request of [
      { method: 'POST' as const, url: '/v1/tunnels', payload: { port: 1 } },
      { method: 'GET' as const, url: '/v1/tunnels' },
      { method: 'GET' as const, url: `/v1/tunnels/${id}` },
    ]) {
      const res = await broker.app.inject({ ...request, headers: broker.auth(userId) });
      expect(res.statusCode, `${request.method} ${request.url}`).toBe(503);
      expect(res.json()).toMatchObject({ code: 'SERVICE_UNAVAILABLE' });
      expect(res.body).not.toMatch(/ECONNREFUSED|postgres|prisma/i);
    }
    expect((await broker.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    await eventually(() => broker.logs.events('reaper.sweep_failed').length > 0, { timeoutMs: 5000, what: 'a failed sweep' });
  } finally {
    await postgres.start();
  }

  await eventually(async () => (await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: broker.auth(userId) })).statusCode === 200, { timeoutMs: 15_000, what: 'reads to work again' });
  const again = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 2 } });
  expect(again.statusCode).toBe(201);
  expect((await broker.app.inject({ method: 'POST', url: `/v1/tunnels/${id}/heartbeat`, headers: broker.auth(userId) })).statusCode).toBe(200);
}, 60_000);
