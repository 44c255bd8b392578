import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { EndpointName, FaultRule } from '../../src/cloudflare/emulator/emulator.js';
import { makeDue, useTestBroker, deadlineOf } from '../helpers/broker.js';

const broker = useTestBroker({ env: { CLOUDFLARE_TIMEOUT_MS: '300', CLOUDFLARE_MAX_RETRIES: '1', MAX_TUNNELS_PER_USER: '1' } });

function upstreamSnapshot() {
  return { tunnels: broker.emulator.liveTunnels().length, dns: broker.emulator.dnsRecords().length };
}

async function expectCleanFailure(fault: Omit<FaultRule, 'endpoint'> & { endpoint: EndpointName }, expected: { status: number; code: string; retryAfter?: boolean }) {
  const userId = `user-${randomUUID()}`;
  const slug = `fail-${randomUUID().slice(0, 8)}`;
  const before = upstreamSnapshot();
  const remove = broker.emulator.injectFault(fault);
  const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000, requestedSlug: slug } });
  remove();
  expect(res.statusCode).toBe(expected.status);
  expect(res.json().code).toBe(expected.code);
  expect(res.json().message).not.toMatch(/cloudflare\.com|stack|at \w+ \(/i);
  if (expected.retryAfter) expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);

  // Nothing left behind upstream, and the row is ended so the slug and quota are free.
  expect(upstreamSnapshot()).toEqual(before);
  const rows = await broker.app.prisma.tunnel.findMany({ where: { ownerId: userId } });
  expect(rows).toHaveLength(1);
  expect(rows[0]).toMatchObject({ status: 'ended', endReason: 'create_failed' });
  expect(await deadlineOf(broker.redis, rows[0]!.id)).toBeNull();
  // MAX_TUNNELS_PER_USER is 1 here: a leaked quota would make this 429.
  const retry = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000, requestedSlug: slug } });
  expect(retry.statusCode).toBe(201);
}

// Creates are retried (CLOUDFLARE_MAX_RETRIES is 1 here, so two attempts) and adopt what a
// lost attempt made; test/tunnels/create-retries.test.ts covers the retries that succeed.
// Here every attempt fails, so the create must end cleanly anyway.
describe('a Cloudflare failure at each create step leaves nothing behind', () => {
  it('tunnel create fails with 500 (not retried)', () => expectCleanFailure({ endpoint: 'tunnel.create', kind: 'error5xx', status: 500, times: 1 }, { status: 502, code: 'UPSTREAM_ERROR' }));
  it('tunnel create is rate limited with a Retry-After too long to wait for', () => expectCleanFailure({ endpoint: 'tunnel.create', kind: 'rateLimit', retryAfterSec: 7, times: 1 }, { status: 503, code: 'UPSTREAM_UNAVAILABLE', retryAfter: true }));
  it('tunnel create times out on every attempt', () => expectCleanFailure({ endpoint: 'tunnel.create', kind: 'hang', times: 2 }, { status: 503, code: 'UPSTREAM_UNAVAILABLE', retryAfter: true }));
  it('tunnel create succeeds upstream but the response is lost on every attempt', () => expectCleanFailure({ endpoint: 'tunnel.create', kind: 'lostResponse', times: 2 }, { status: 503, code: 'UPSTREAM_UNAVAILABLE' }));
  it('DNS record create fails', () => expectCleanFailure({ endpoint: 'dns.create', kind: 'error5xx', status: 500, times: 1 }, { status: 502, code: 'UPSTREAM_ERROR' }));
  it('DNS record create succeeds upstream but the response is lost on every attempt', () => expectCleanFailure({ endpoint: 'dns.create', kind: 'lostResponse', times: 2 }, { status: 503, code: 'UPSTREAM_UNAVAILABLE' }));
  it('ingress configuration fails on every attempt', () => expectCleanFailure({ endpoint: 'tunnel.configuration.put', kind: 'error5xx', status: 503, times: 2 }, { status: 503, code: 'UPSTREAM_UNAVAILABLE', retryAfter: true }));
});

describe('rollback that fails itself', () => {
  it('keeps the tunnel ending with a retry scheduled, and the reaper removes it later', async () => {
    const userId = `user-${randomUUID()}`;
    const before = upstreamSnapshot();
    const removeDns = broker.emulator.injectFault({ endpoint: 'dns.create', kind: 'error5xx', status: 500, times: 1 });
    const removeDelete = broker.emulator.injectFault({ endpoint: 'tunnel.delete', kind: 'error5xx', status: 500 });
    const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000 } });
    removeDns();
    expect(res.statusCode).toBe(502);
    const [row] = await broker.app.prisma.tunnel.findMany({ where: { ownerId: userId } });
    expect(row).toMatchObject({ status: 'ending', endReason: 'create_failed' });
    expect(upstreamSnapshot().tunnels).toBe(before.tunnels + 1);
    expect(await deadlineOf(broker.redis, row!.id)).not.toBeNull();

    removeDelete();
    await makeDue(broker, row!.id);
    const sweep = await broker.app.reaper!.sweep();
    expect(sweep.ended).toBeGreaterThanOrEqual(1);
    expect(upstreamSnapshot()).toEqual(before);
    expect(await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: row!.id } })).toMatchObject({ status: 'ended', endReason: 'create_failed' });
  });
});

describe('a Cloudflare failure during DELETE', () => {
  for (const endpoint of ['dns.delete', 'tunnel.delete'] as const) {
    it(`(${endpoint}) answers 502 UPSTREAM_ERROR without claiming nothing was created, and the reaper finishes the end`, async () => {
      const userId = `user-${randomUUID()}`;
      const created = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000 } });
      expect(created.statusCode).toBe(201);
      const id = created.json().tunnelId as string;

      const remove = broker.emulator.injectFault({ endpoint, kind: 'error5xx', status: 500 });
      let res;
      try {
        res = await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${id}`, headers: broker.auth(userId) });
      } finally {
        remove();
      }
      expect(res.statusCode).toBe(502);
      expect(res.json().code).toBe('UPSTREAM_ERROR');
      expect(res.json().message).not.toMatch(/nothing was created/i);
      expect(await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id } })).toMatchObject({ status: 'ending' });

      // The retry the answer promises: the reaper finishes the end.
      await makeDue(broker, id);
      await broker.app.reaper!.sweep();
      expect(await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id } })).toMatchObject({ status: 'ended' });
    });
  }
});
