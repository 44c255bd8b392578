/**
 * Creates are retried safely: a retry adopts what an earlier attempt made instead of
 * making a second tunnel or DNS record, and never touches what is not ours.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { EndpointName, FaultRule } from '../../src/cloudflare/emulator/emulator.js';
import { createCloudflareClient } from '../../src/cloudflare/cloudflare-client.js';
import { TEST_DOMAIN, useTestBroker } from '../helpers/broker.js';

const MAX_RETRIES = 2;
const broker = useTestBroker({ env: { CLOUDFLARE_TIMEOUT_MS: '300', CLOUDFLARE_MAX_RETRIES: String(MAX_RETRIES) } });

const ENDPOINTS: EndpointName[] = ['tunnel.create', 'tunnel.list', 'tunnel.token', 'tunnel.configuration.put', 'dns.create', 'dns.list', 'tunnel.delete', 'dns.delete'];

/** Requests per endpoint made while `fn` ran. */
async function counting<T>(fn: () => Promise<T>): Promise<{ result: T; calls: Partial<Record<EndpointName, number>> }> {
  const before = Object.fromEntries(ENDPOINTS.map((e) => [e, broker.emulator.count(e)]));
  const result = await fn();
  const calls: Partial<Record<EndpointName, number>> = {};
  for (const e of ENDPOINTS) {
    const n = broker.emulator.count(e) - before[e]!;
    if (n > 0) calls[e] = n;
  }
  return { result, calls };
}

async function createWithFault(fault: FaultRule | undefined, slug = `r-${randomUUID().slice(0, 8)}`) {
  const userId = `user-${randomUUID()}`;
  const remove = fault ? broker.emulator.injectFault(fault) : () => {};
  try {
    const started = Date.now();
    const { result: res, calls } = await counting(() =>
      broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000, requestedSlug: slug } }),
    );
    const rows = await broker.app.prisma.tunnel.findMany({ where: { ownerId: userId } });
    expect(rows).toHaveLength(1);
    return { res, calls, row: rows[0]!, slug, elapsedMs: Date.now() - started };
  } finally {
    remove();
  }
}

/** Every tunnel upstream with the row's name, soft-deleted ones included. */
function tunnelsNamedFor(rowId: string) {
  return broker.emulator.allTunnels().filter((t) => t.name === `${broker.config.cloudflare.tunnelNamePrefix}${rowId}`);
}

function expectOneLiveTunnelAndRecord(row: { id: string; hostname: string; cfTunnelId: string | null; dnsRecordId: string | null }, token: string) {
  const tunnels = tunnelsNamedFor(row.id);
  expect(tunnels).toHaveLength(1);
  expect(tunnels[0]!.deleted_at).toBeNull();
  expect(row.cfTunnelId).toBe(tunnels[0]!.id);
  expect(token).toBe(tunnels[0]!.token);
  const records = broker.emulator.dnsRecords().filter((r) => r.name === row.hostname);
  expect(records).toHaveLength(1);
  expect(records[0]).toMatchObject({ id: row.dnsRecordId, type: 'CNAME', content: `${tunnels[0]!.id}.cfargotunnel.com` });
}

describe('create retries', () => {
  it('the happy path stays at two sequential round trips, with no lookups', async () => {
    const { res, calls, row } = await createWithFault(undefined);
    expect(res.statusCode).toBe(201);
    expect(calls).toEqual({ 'tunnel.create': 1, 'dns.create': 1, 'tunnel.configuration.put': 1 });
    expectOneLiveTunnelAndRecord(row, res.json().cloudflaredToken);
  });

  it('tunnel create succeeded upstream but its response was lost: the retry adopts that tunnel', async () => {
    const { res, calls, row } = await createWithFault({ endpoint: 'tunnel.create', kind: 'lostResponse', times: 1 });
    expect(res.statusCode).toBe(201);
    expect(row.status).toBe('active');
    // The retry got 409/1013; the tunnel was found by name and its token fetched.
    expect(calls['tunnel.create']).toBe(2);
    expect(calls['tunnel.list']).toBeGreaterThanOrEqual(1);
    expect(calls['tunnel.token']).toBe(1);
    expectOneLiveTunnelAndRecord(row, res.json().cloudflaredToken);
    expect(broker.logs.events('upstream.adopted').some((l) => l.operation === 'tunnel.create' && l.cfTunnelId === row.cfTunnelId)).toBe(true);
  });

  it('tunnel create succeeded upstream but the connection was reset: adopted too', async () => {
    const { res, calls, row } = await createWithFault({ endpoint: 'tunnel.create', kind: 'lostResponse', lostAs: 'socketReset', times: 1 });
    expect(res.statusCode).toBe(201);
    expect(calls['tunnel.create']).toBe(2);
    expectOneLiveTunnelAndRecord(row, res.json().cloudflaredToken);
  });

  it('tunnel create timed out: retried, one tunnel', async () => {
    const { res, calls, row } = await createWithFault({ endpoint: 'tunnel.create', kind: 'hang', times: 1 });
    expect(res.statusCode).toBe(201);
    expect(calls['tunnel.create']).toBe(2);
    expectOneLiveTunnelAndRecord(row, res.json().cloudflaredToken);
  });

  it('DNS create succeeded upstream but its response was lost: the retry adopts that record', async () => {
    const { res, calls, row } = await createWithFault({ endpoint: 'dns.create', kind: 'lostResponse', times: 1 });
    expect(res.statusCode).toBe(201);
    expect(calls['dns.create']).toBe(2);
    expect(calls['dns.list']).toBeGreaterThanOrEqual(1);
    expectOneLiveTunnelAndRecord(row, res.json().cloudflaredToken);
  });

  it('honours Retry-After on a rate-limited create', async () => {
    const { res, calls, row, elapsedMs } = await createWithFault({ endpoint: 'tunnel.create', kind: 'rateLimit', retryAfterSec: 1, times: 1 });
    expect(res.statusCode).toBe(201);
    expect(calls['tunnel.create']).toBe(2);
    expect(elapsedMs).toBeGreaterThanOrEqual(1_000);
    expectOneLiveTunnelAndRecord(row, res.json().cloudflaredToken);
  });

  it('stops after CLOUDFLARE_MAX_RETRIES retries and leaves nothing behind', async () => {
    const { res, calls, row } = await createWithFault({ endpoint: 'tunnel.create', kind: 'error5xx', status: 503 });
    expect(res.statusCode).toBe(503);
    expect(res.json().code).toBe('UPSTREAM_UNAVAILABLE');
    expect(calls['tunnel.create']).toBe(1 + MAX_RETRIES);
    expect(row).toMatchObject({ status: 'ended', endReason: 'create_failed' });
    expect(tunnelsNamedFor(row.id)).toHaveLength(0);
  });

  it('stops after the bound when every response is lost, and the rollback removes the one tunnel made', async () => {
    const { res, calls, row } = await createWithFault({ endpoint: 'tunnel.create', kind: 'lostResponse' });
    expect(res.statusCode).toBe(503);
    expect(calls['tunnel.create']).toBe(1 + MAX_RETRIES);
    expect(row).toMatchObject({ status: 'ended', endReason: 'create_failed' });
    const tunnels = tunnelsNamedFor(row.id);
    expect(tunnels).toHaveLength(1);
    expect(tunnels[0]!.deleted_at).not.toBeNull();
  });

  it('does not retry a failure that is not transient (500)', async () => {
    const { res, calls, row } = await createWithFault({ endpoint: 'tunnel.create', kind: 'error5xx', status: 500, times: 1 });
    expect(res.statusCode).toBe(502);
    expect(calls['tunnel.create']).toBe(1);
    expect(row).toMatchObject({ status: 'ended', endReason: 'create_failed' });
  });
});

describe('the SDK\'s retries of calls that are safe to repeat', () => {
  it('honours a short Retry-After', async () => {
    const { res, calls, elapsedMs } = await createWithFault({ endpoint: 'tunnel.configuration.put', kind: 'rateLimit', retryAfterSec: 1, times: 1 });
    expect(res.statusCode).toBe(201);
    expect(calls['tunnel.configuration.put']).toBe(2);
    expect(elapsedMs).toBeGreaterThanOrEqual(1_000);
  });

  it('hands a long Retry-After (a blocked account) up at once instead of sleeping through it', async () => {
    const { res, calls, row, elapsedMs } = await createWithFault({ endpoint: 'tunnel.configuration.put', kind: 'rateLimit', retryAfterSec: 30, times: 1 });
    expect(res.statusCode).toBe(503);
    expect(res.headers['retry-after']).toBe('30');
    expect(calls['tunnel.configuration.put']).toBe(1);
    expect(elapsedMs).toBeLessThan(5_000);
    expect(row).toMatchObject({ status: 'ended', endReason: 'create_failed' });
  });
});

describe('a DNS name that is someone else\'s', () => {
  async function foreignRecord(slug: string, content: string) {
    // Another tool on the same zone, without the broker's budget.
    const other = createCloudflareClient({ ...broker.config.cloudflare, maxRetries: 0 });
    return other.dns.records.create({ zone_id: broker.emulator.zoneId, type: 'CNAME', name: `${slug}.${TEST_DOMAIN}`, content, proxied: true, ttl: 1 });
  }

  for (const [what, content] of [
    ['a CNAME elsewhere', 'elsewhere.example.com'],
    ['a CNAME to another tunnel', `${randomUUID()}.cfargotunnel.com`],
  ] as const) {
    it(`${what}: 502, not retried, their record untouched, our tunnel rolled back`, async () => {
      const slug = `taken-${randomUUID().slice(0, 8)}`;
      const theirs = await foreignRecord(slug, content);
      const { res, calls, row } = await createWithFault(undefined, slug);
      expect(res.statusCode).toBe(502);
      expect(res.json().code).toBe('UPSTREAM_ERROR');
      expect(calls['dns.create']).toBe(1);
      const records = broker.emulator.dnsRecords().filter((r) => r.name === `${slug}.${TEST_DOMAIN}`);
      expect(records).toEqual([expect.objectContaining({ id: theirs.id, content })]);
      expect(row).toMatchObject({ status: 'ended', endReason: 'create_failed' });
      const tunnels = tunnelsNamedFor(row.id);
      expect(tunnels).toHaveLength(1);
      expect(tunnels[0]!.deleted_at).not.toBeNull();
    });
  }
});
