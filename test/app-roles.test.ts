import { afterEach, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from './helpers/broker.js';

let broker: TestBroker | undefined;
afterEach(async () => {
  await broker?.close();
  broker = undefined;
});

describe('BROKER_ROLE', () => {
  it('api: serves /v1 without a reaper', async () => {
    broker = await startTestBroker({ env: { BROKER_ROLE: 'api' } });
    expect(broker.app.reaper).toBeNull();
    expect((await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: broker.auth('u') })).statusCode).toBe(200);
  });

  it('reaper: runs the reaper and serves only health checks', async () => {
    broker = await startTestBroker({ env: { BROKER_ROLE: 'reaper' }, startReaper: true });
    expect(broker.app.reaper?.started).toBe(true);
    expect((await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: broker.auth('u') })).statusCode).toBe(404);
    expect((await broker.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
  });

  it('all: both, and closing the app stops the reaper', async () => {
    broker = await startTestBroker({ startReaper: true });
    const reaper = broker.app.reaper!;
    expect(reaper.started).toBe(true);
    expect((await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: broker.auth('u') })).statusCode).toBe(200);
    await broker.close();
    broker = undefined;
    expect(reaper.started).toBe(false);
  });
});
