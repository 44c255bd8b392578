import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startCloudflareEmulator } from '../../src/cloudflare/emulator/emulator.js';
import { eventually, startTestBroker, TEST_DOMAIN, type TestBroker } from '../helpers/broker.js';
import { createTestDatabase } from '../helpers/database.js';
import { heartbeatKeysOf } from '../../src/tunnels/heartbeat-keys.js';

// Two reapers on one database, Redis and Cloudflare, with a 1 s lease: a batch of due tunnels
// takes several leases to work through (Cloudflare is slow here), so each reaper's claims on
// what it has not reached yet must be renewed, and each tunnel still torn down exactly once.
const env = { TUNNEL_LEASE_SECONDS: '1', MAX_TUNNELS_PER_USER: '100', CREATE_RATE_LIMIT_PER_MINUTE: '1000', CLOUDFLARE_TIMEOUT_MS: '5000' };
let a: TestBroker;
let b: TestBroker;
beforeAll(async () => {
  const db = await createTestDatabase();
  const emulator = await startCloudflareEmulator({ zoneName: TEST_DOMAIN });
  const shared = { db, emulator, redisKeyPrefix: `test:${randomUUID()}:` };
  a = await startTestBroker({ env, shared });
  b = await startTestBroker({ env, shared });
});
afterAll(async () => {
  await b?.close();
  await a?.close();
  await a?.emulator.close();
  await a?.db.drop();
});

it('two reapers working through a batch that outlives many leases tear each tunnel down exactly once', async () => {
  const userId = `user-${randomUUID()}`;
  const ids: string[] = [];
  for (let i = 0; i < 32; i++) {
    const res = await a.app.inject({ method: 'POST', url: '/v1/tunnels', headers: a.auth(userId), payload: { port: 3000 } });
    expect(res.statusCode).toBe(201);
    ids.push(res.json().tunnelId as string);
  }
  // 32 tunnels, 8 at a time, about 0.5 s each: two seconds of work, two leases.
  const removers = (['dns.delete', 'tunnel.delete'] as const).map((endpoint) => a.emulator.injectFault({ endpoint, kind: 'latency', latencyMs: 250 }));
  const since = a.emulator.requests.length;
  try {
    for (const id of ids) await a.redis.zadd(heartbeatKeysOf(id).deadlines, 0, id);
    const startedAt = Date.now();
    const first = a.app.reaper!.sweep();
    // Past one lease, with A still working through its batch, B sweeps: A's claims were renewed.
    await eventually(async () => Date.now() - startedAt > 1_500 && (await a.app.prisma.tunnel.count({ where: { ownerId: userId, status: 'active' } })) > 0, { timeoutMs: 5_000, what: 'A still working after one lease' });
    const second = await b.app.reaper!.sweep();
    expect(second.claimed).toBe(0);
    const done = await first;
    expect(done).toMatchObject({ claimed: ids.length, ended: ids.length, busy: 0, leaseLost: 0 });
  } finally {
    for (const remove of removers) remove();
  }
  const rows = await a.app.prisma.tunnel.findMany({ where: { ownerId: userId } });
  expect(rows.every((r) => r.status === 'ended' && r.endReason === 'heartbeat_lapsed')).toBe(true);
  const deletes = new Map<string, number>();
  for (const r of a.emulator.requests.slice(since)) {
    if (r.method === 'DELETE' && r.status === 200 && (r.endpoint === 'tunnel.delete' || r.endpoint === 'dns.delete')) deletes.set(r.path, (deletes.get(r.path) ?? 0) + 1);
  }
  expect(deletes.size).toBe(2 * ids.length);
  expect([...deletes.values()].every((n) => n === 1)).toBe(true);
});
