import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { EndpointName } from '../../src/cloudflare/emulator/emulator.js';
import { makeDue, useTestBroker, deadlineOf } from '../helpers/broker.js';
import { waitForNewRequest } from '../helpers/cluster.js';
import { heartbeatKeysOf } from '../../src/tunnels/heartbeat-keys.js';

// A 1 s lease is renewed every ~333 ms, so a create learns of a DELETE quickly.
const broker = useTestBroker({ env: { TUNNEL_LEASE_SECONDS: '1', CLOUDFLARE_TIMEOUT_MS: '5000' } });

const user = () => `user-${randomUUID()}`;
const post = (userId: string, requestedSlug: string) =>
  broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000, requestedSlug } });
const del = (userId: string, id: string) => broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${id}`, headers: broker.auth(userId) });

/** Upstream objects that belong to this row or hostname: none must be left. */
function upstreamOf(rowId: string, hostname: string) {
  return {
    tunnels: broker.emulator.liveTunnels().filter((t) => t.name.endsWith(rowId)).length,
    dns: broker.emulator.dnsRecords().filter((r) => r.name === hostname).length,
  };
}

/** Successful deletes per upstream id since `since`: a teardown run twice shows up here as 2. */
function successfulDeletes(since: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of broker.emulator.requests.slice(since)) {
    if (r.method !== 'DELETE' || r.status !== 200 || (r.endpoint !== 'tunnel.delete' && r.endpoint !== 'dns.delete')) continue;
    const key = r.path.split('?')[0]!;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

describe('a DELETE that lands while the tunnel is being created', () => {
  async function deleteMidCreate(slowOn: EndpointName[], deleteOnceSeen: EndpointName) {
    const userId = user();
    const slug = `mid-${randomUUID().slice(0, 8)}`;
    const since = broker.emulator.requests.length;
    const removers = slowOn.map((endpoint) => broker.emulator.injectFault({ endpoint, kind: 'latency', latencyMs: 1_500, times: 1 }));
    try {
      const creating = post(userId, slug);
      await waitForNewRequest(broker.emulator, since, { endpoint: deleteOnceSeen });
      // The owner sees a creating tunnel in the list, and deletes it.
      const listed = (await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: broker.auth(userId) })).json().tunnels as Array<{ id: string; status: string }>;
      expect(listed).toHaveLength(1);
      expect(listed[0]!.status).toBe('creating');
      const deleted = await del(userId, listed[0]!.id);
      expect(deleted.statusCode).toBe(204);

      const created = await creating;
      expect(created.statusCode).toBe(409);
      expect(created.json().code).toBe('TUNNEL_DELETED_DURING_CREATE');
      const row = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: listed[0]!.id } });
      expect(row).toMatchObject({ status: 'ended', endReason: 'deleted' });
      // Nothing left upstream: no tunnel, and no DNS record pointing at a deleted tunnel.
      expect(upstreamOf(row.id, row.hostname)).toEqual({ tunnels: 0, dns: 0 });
      for (const [path, n] of successfulDeletes(since)) expect(n, path).toBe(1);
      // The slug is free for the next user.
      expect((await post(user(), slug)).statusCode).toBe(201);
    } finally {
      for (const remove of removers) remove();
    }
  }

  it('with Cloudflare slow on DNS and ingress: the create undoes everything, the slug is free', () =>
    deleteMidCreate(['dns.create', 'tunnel.configuration.put'], 'dns.create'));

  it('with Cloudflare slow on the tunnel create: the tunnel is not left upstream', () =>
    deleteMidCreate(['tunnel.create'], 'tunnel.create'));
});

describe('one teardown per tunnel', () => {
  it('forty parallel DELETEs of one tunnel cost one teardown: at most 4 upstream calls, all 204', async () => {
    const userId = user();
    const created = await post(userId, `burst-${randomUUID().slice(0, 8)}`);
    expect(created.statusCode).toBe(201);
    const id = created.json().tunnelId as string;
    const since = broker.emulator.requests.length;
    const answers = await Promise.all(Array.from({ length: 40 }, () => del(userId, id)));
    expect(answers.map((a) => a.statusCode)).toEqual(Array(40).fill(204));
    // The DELETE that took the tunnel answers after its teardown; the others at once.
    await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id } }).then((row) => expect(row.status).toBe('ended'));
    const calls = broker.emulator.requests.slice(since);
    expect(calls.length).toBeLessThanOrEqual(4);
    expect(calls.map((c) => c.endpoint).sort()).toEqual(['dns.delete', 'tunnel.connections.delete', 'tunnel.delete']);
  });

  it('a DELETE of a tunnel already ending sends nothing upstream; the reaper finishes the one teardown', async () => {
    const userId = user();
    const id = (await post(userId, `ending-${randomUUID().slice(0, 8)}`)).json().tunnelId as string;
    const remove = broker.emulator.injectFault({ endpoint: 'tunnel.delete', kind: 'error5xx', status: 500 });
    try {
      expect((await del(userId, id)).statusCode).toBe(502);
    } finally {
      remove();
    }
    expect(await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id } })).toMatchObject({ status: 'ending' });
    const since = broker.emulator.requests.length;
    const again = await Promise.all(Array.from({ length: 10 }, () => del(userId, id)));
    expect(again.map((a) => a.statusCode)).toEqual(Array(10).fill(204));
    expect(broker.emulator.requests.length).toBe(since);
    await makeDue(broker, id);
    expect((await broker.app.reaper!.sweep()).ended).toBe(1);
    expect((await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id } })).status).toBe('ended');
  });

  it('the reaper defers to a live holder: a due tunnel whose lease is held is left alone and comes due when it would lapse', async () => {
    const userId = user();
    const id = (await post(userId, `held-${randomUUID().slice(0, 8)}`)).json().tunnelId as string;
    // Someone else holds the teardown: ending, with an unexpired lease.
    await broker.app.prisma.$executeRaw`UPDATE tunnels SET status = 'ending', end_reason = 'deleted', lease_generation = lease_generation + 1, lease_expires_at = clock_timestamp() + interval '30 seconds' WHERE id = ${id}::uuid`;
    await broker.redis.zadd(heartbeatKeysOf(id).deadlines, 0, id);
    const since = broker.emulator.requests.length;
    const sweep = await broker.app.reaper!.sweep();
    expect(sweep).toMatchObject({ claimed: 1, busy: 1, ended: 0 });
    expect(broker.emulator.requests.length).toBe(since);
    const deadline = Number(await deadlineOf(broker.redis, id));
    expect(deadline).toBeGreaterThan(Date.now() + 25_000);
  });

  it('a teardown saves every id it finds by a lookup before it deletes anything', async () => {
    const userId = user();
    const created = (await post(userId, `lookup-${randomUUID().slice(0, 8)}`)).json() as { tunnelId: string };
    const id = created.tunnelId;
    const known = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id } });
    // A create whose answers were lost: the row knows neither id, and its holder died.
    await broker.app.prisma.$executeRaw`UPDATE tunnels SET status = 'ending', end_reason = 'create_failed', cf_tunnel_id = NULL, dns_record_id = NULL, lease_generation = lease_generation + 1, lease_expires_at = clock_timestamp() WHERE id = ${id}::uuid`;
    const remove = broker.emulator.injectFault({ endpoint: 'dns.delete', kind: 'error5xx', status: 500 });
    try {
      await makeDue(broker, id);
      expect((await broker.app.reaper!.sweep()).retryScheduled).toBe(1);
    } finally {
      remove();
    }
    // Nothing could be deleted, yet whoever comes next knows exactly what exists.
    expect(await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id } })).toMatchObject({ status: 'ending', cfTunnelId: known.cfTunnelId, dnsRecordId: known.dnsRecordId });
    await makeDue(broker, id);
    expect((await broker.app.reaper!.sweep()).ended).toBe(1);
    expect(upstreamOf(id, known.hostname)).toEqual({ tunnels: 0, dns: 0 });
  });
});
