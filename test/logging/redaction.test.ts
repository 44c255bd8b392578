import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REDACTED } from '../../src/logging/logger.js';
import { startTestBroker, type TestBroker } from '../helpers/broker.js';

let broker: TestBroker;
beforeAll(async () => {
  // Trace level: every line the broker can write is captured.
  broker = await startTestBroker({ env: { LOG_LEVEL: 'trace' } });
});
afterAll(async () => {
  await broker?.close();
});

describe('logs', () => {
  it('never contain bearer tokens or cloudflared tokens, through a whole tunnel lifecycle and failures', async () => {
    const headers = broker.auth('log-user');
    const bearer = headers.authorization.slice('Bearer '.length);
    const created = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers, payload: { port: 3000 } });
    expect(created.statusCode).toBe(201);
    const { tunnelId, cloudflaredToken } = created.json();
    await broker.app.inject({ method: 'POST', url: `/v1/tunnels/${tunnelId}/heartbeat`, headers });
    await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers });
    const remove = broker.emulator.injectFault({ endpoint: 'dns.create', kind: 'error5xx', status: 500, times: 1 });
    await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers, payload: { port: 3001 } });
    remove();
    await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: { authorization: 'Bearer forged.token.value' }, payload: { port: 1 } });
    await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${tunnelId}`, headers });

    // And if anything ever logs these objects, they are censored.
    broker.app.log.info({ headers: { authorization: headers.authorization }, cloudflaredToken, nested: { token: cloudflaredToken } }, 'deliberate');

    expect(broker.logs.lines.length).toBeGreaterThan(10);
    expect(broker.logs.raw).not.toContain(bearer);
    expect(broker.logs.raw).not.toContain(cloudflaredToken);
    expect(broker.logs.raw).not.toContain('forged.token.value');
    // The secret part of the cloudflared token on its own, too.
    const secret = JSON.parse(Buffer.from(cloudflaredToken, 'base64').toString()).s as string;
    expect(broker.logs.raw).not.toContain(secret);
    const deliberate = broker.logs.lines.find((l) => l.msg === 'deliberate') as Record<string, any>;
    expect(deliberate.cloudflaredToken).toBe(REDACTED);
    expect(deliberate.nested.token).toBe(REDACTED);
    expect(deliberate.headers.authorization).toBe(REDACTED);
  });

  it('carry request id, user id and tunnel id on lifecycle events, with a stable event field', async () => {
    const created = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth('event-user'), payload: { port: 3000 } });
    const { tunnelId } = created.json();
    await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${tunnelId}`, headers: broker.auth('event-user') });
    for (const event of ['tunnel.created', 'tunnel.deleted']) {
      const line = broker.logs.events(event).find((l) => l.tunnelId === tunnelId);
      expect(line, event).toMatchObject({ reqId: expect.any(String), userId: 'event-user', tunnelId });
    }
  });

  it('record upstream failures with an event and no secrets', async () => {
    const remove = broker.emulator.injectFault({ endpoint: 'tunnel.create', kind: 'error5xx', status: 500, times: 1 });
    const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth('fail-user'), payload: { port: 3000 } });
    remove();
    expect(res.statusCode).toBe(502);
    expect(broker.logs.events('upstream.failure').some((l) => l.operation === 'tunnel.create')).toBe(true);
    expect(broker.logs.events('tunnel.create_failed').some((l) => l.userId === 'fail-user')).toBe(true);
  });
});
