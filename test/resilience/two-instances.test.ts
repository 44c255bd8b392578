import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/broker.js';
import type { BrokerProcess } from '../helpers/broker-process.js';
import { startCluster, waitForNewRequest, type Cluster } from '../helpers/cluster.js';

// Two broker processes, each running API and reaper, on one PostgreSQL, Redis and Cloudflare.
const env = {
  TUNNEL_TTL_SECONDS: '2', HEARTBEAT_INTERVAL_SECONDS: '1', REAPER_INTERVAL_SECONDS: '1',
  CLOUDFLARE_TIMEOUT_MS: '1000', CLOUDFLARE_MAX_RETRIES: '0', CLOUDFLARE_BUDGET_WINDOW_SECONDS: '1', CREATE_RATE_LIMIT_PER_MINUTE: '20',
};
let cluster: Cluster;
let a: BrokerProcess;
let b: BrokerProcess;
beforeAll(async () => {
  // The in-process broker only inspects; the two processes do all the work.
  cluster = await startCluster(env, { survivorReaper: false });
  [a, b] = await Promise.all([cluster.spawn('a'), cluster.spawn('b')]);
}, 60_000);
afterAll(async () => {
  await cluster?.close();
});

const alternate = (i: number) => (i % 2 === 0 ? a : b);
const rows = (where: object) => cluster.survivor.app.prisma.tunnel.findMany({ where });

describe('two broker processes', () => {
  it('hold the per-user limit together: 12 parallel creates across both yield exactly 5', async () => {
    const userId = `user-${randomUUID()}`;
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => alternate(i).request('POST', '/v1/tunnels', { userId, body: { port: 3000 + i } })));
    expect(results.filter((r) => r.status === 201)).toHaveLength(5);
    expect(results.filter((r) => r.status === 429 && r.body.code === 'TUNNEL_LIMIT_EXCEEDED')).toHaveLength(7);
    expect(await rows({ ownerId: userId, status: { not: 'ended' } })).toHaveLength(5);
  });

  it('hold slug uniqueness together: 10 parallel creates of one slug across both yield exactly 1', async () => {
    const slug = `both-${randomUUID().slice(0, 8)}`;
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => alternate(i).request('POST', '/v1/tunnels', { userId: `user-${randomUUID()}`, body: { port: 3000, requestedSlug: slug } })));
    expect(results.filter((r) => r.status === 201)).toHaveLength(1);
    expect(results.filter((r) => r.status === 409)).toHaveLength(9);
    expect(cluster.emulator.dnsRecords().filter((r) => r.name.startsWith(`${slug}.`))).toHaveLength(1);
  });

  it('share one create rate limit: the 21st attempt in a minute is refused whichever broker gets it', async () => {
    const userId = `user-${randomUUID()}`;
    for (let i = 0; i < 20; i++) expect((await alternate(i).request('POST', '/v1/tunnels', { userId, body: { port: 0 } })).status).toBe(400);
    for (const broker of [a, b]) {
      const res = await broker.request('POST', '/v1/tunnels', { userId, body: { port: 3000 } });
      expect(res.status).toBe(429);
      expect(res.body.code).toBe('RATE_LIMITED');
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    }
  });

  it('delete each expired tunnel upstream exactly once', async () => {
    const created: string[] = [];
    for (let i = 0; i < 10; i++) {
      const res = await alternate(i).request('POST', '/v1/tunnels', { userId: `user-${randomUUID()}`, body: { port: 3000 } });
      expect(res.status).toBe(201);
      created.push(res.body.tunnelId);
    }
    // Nobody heartbeats: both reapers race for all ten.
    await eventually(async () => (await rows({ id: { in: created }, status: 'ended' })).length === created.length, { timeoutMs: 40_000, intervalMs: 200, what: 'all ten reaped' });
    for (const row of await rows({ id: { in: created } })) {
      expect(row.endReason).toBe('heartbeat_lapsed');
      const deletes = cluster.emulator.requests.filter((r) => r.endpoint === 'tunnel.delete' && r.path.includes(row.cfTunnelId!));
      const dnsDeletes = cluster.emulator.requests.filter((r) => r.endpoint === 'dns.delete' && r.path.includes(row.dnsRecordId!));
      expect(deletes, `tunnel ${row.id}`).toHaveLength(1);
      expect(dnsDeletes, `dns of ${row.id}`).toHaveLength(1);
    }
  });

  it('a broker killed mid-create is cleaned up by the other', async () => {
    const userId = `user-${randomUUID()}`;
    const since = cluster.emulator.requests.length;
    const remove = cluster.emulator.injectFault({ endpoint: 'tunnel.configuration.put', kind: 'hang' });
    const pending = a.request('POST', '/v1/tunnels', { userId, body: { port: 3000 } }).catch(() => undefined);
    await waitForNewRequest(cluster.emulator, since, { endpoint: 'dns.create', answered: true });
    await waitForNewRequest(cluster.emulator, since, { endpoint: 'tunnel.configuration.put' });
    await a.kill9();
    await pending;
    remove();
    const [row] = await rows({ ownerId: userId });
    expect(row?.status).toBe('creating');
    await eventually(async () => (await rows({ id: row!.id, status: 'ended' })).length === 1, { timeoutMs: 40_000, intervalMs: 200, what: 'b to roll back a\'s create' });
    expect(cluster.emulator.liveTunnels().some((t) => t.name.endsWith(row!.id))).toBe(false);
    expect(cluster.emulator.dnsRecords().some((r) => r.name === row!.hostname)).toBe(false);
    // b is still serving.
    expect((await b.request('GET', '/v1/tunnels', { userId })).status).toBe(200);
  });
});

describe('two broker processes and one Cloudflare request budget', () => {
  let small: Cluster;
  let x: BrokerProcess;
  let y: BrokerProcess;
  // 20 requests per minute across both; creates may use 18 of them (10% stays for teardowns).
  beforeAll(async () => {
    small = await startCluster({ ...env, CLOUDFLARE_BUDGET_REQUESTS: '20', CLOUDFLARE_BUDGET_WINDOW_SECONDS: '60' }, { survivorReaper: false });
    [x, y] = await Promise.all([small.spawn('x'), small.spawn('y')]);
  }, 60_000);
  afterAll(async () => {
    await small?.close();
  });

  it('never lets the two together exceed it: creates beyond it fail fast with 503 and Retry-After, sending nothing', async () => {
    const results = [];
    for (let i = 0; i < 10; i++) {
      results.push(await (i % 2 === 0 ? x : y).request('POST', '/v1/tunnels', { userId: `user-${randomUUID()}`, body: { port: 3000 } }));
    }
    // Each create costs three upstream requests (tunnel, DNS, ingress): six fit in 18.
    expect(results.filter((r) => r.status === 201)).toHaveLength(6);
    const refused = results.filter((r) => r.status === 503);
    expect(refused).toHaveLength(4);
    for (const r of refused) {
      expect(r.body.code).toBe('UPSTREAM_UNAVAILABLE');
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    }
    expect(small.emulator.requests.length).toBeLessThanOrEqual(20);
  });
});
