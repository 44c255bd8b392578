import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../helpers/broker.js';
import { SENTINEL_PRIMARY_NAME, type SentinelTopology, startSentinelTopology } from '../helpers/redis-sentinel.js';

const TTL_SECONDS = 15;

let topology: SentinelTopology;
let broker: TestBroker;

beforeAll(async () => {
  topology = await startSentinelTopology();
  broker = await startTestBroker({
    env: {
      // No host here: the sentinels name the primary.
      REDIS_URL: 'redis://',
      REDIS_SENTINELS: topology.sentinels,
      REDIS_SENTINEL_NAME: SENTINEL_PRIMARY_NAME,
      TUNNEL_TTL_SECONDS: String(TTL_SECONDS),
      HEARTBEAT_INTERVAL_SECONDS: '2',
      REAPER_INTERVAL_SECONDS: '1',
      LOG_LEVEL: 'info',
    },
    startReaper: true,
  });
});
afterAll(async () => {
  await broker?.close();
  await topology?.close();
});

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what} within ${timeoutMs} ms`);
}

describe('Redis behind Sentinel', () => {
  it('follows a failover mid-load: heartbeats answer 200 or 503 meanwhile, then 200 again, and no tunnel is reaped because of it', async () => {
    const user = 'sentinel-user';
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const created = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(user), payload: { port: 3000 + i } });
      expect(created.statusCode).toBe(201);
      ids.push((created.json() as { tunnelId: string }).tunnelId);
    }
    const statuses: { afterKill: boolean; status: number }[] = [];
    let killed = false;
    const beatAll = async () => {
      const results = await Promise.all(ids.map((id) => broker.app.inject({ method: 'POST', url: `/v1/tunnels/${id}/heartbeat`, headers: broker.auth(user) })));
      for (const r of results) statuses.push({ afterKill: killed, status: r.statusCode });
      return results.every((r) => r.statusCode === 200);
    };

    expect(await beatAll()).toBe(true);
    // The broker's keys are on the topology's primary, and replicated: it is not talking to some other Redis.
    const prefix = broker.config.redis.keyPrefix;
    expect(await topology.keyCount(topology.primaryPort, prefix)).toBeGreaterThan(0);
    await until('the replica has the keys', async () => (await topology.keyCount(topology.replicaPort, prefix)) > 0, 10_000);
    await topology.killPrimary();
    killed = true;
    const killedAt = Date.now();
    await until('the sentinels promoted the replica', async () => (await topology.currentPrimaryPort()) === topology.replicaPort, 30_000);
    await until('heartbeats answered 200 again', beatAll, 30_000).catch((error: Error) => {
      const recent = broker.logs.lines.slice(-6).map((l) => `${String(l.msg)} ${JSON.stringify((l.err as { message?: string } | undefined)?.message ?? '')}`);
      throw new Error(`${error.message}; the last answers: ${statuses.slice(-9).map((s) => s.status).join(' ')}; the broker's last log lines: ${recent.join(' | ')}`);
    });
    const recoveredMs = Date.now() - killedAt;
    expect(recoveredMs).toBeLessThan((TTL_SECONDS - 2) * 1000);

    // A full TTL and more of heartbeats on the new primary, while the reaper sweeps every second.
    const end = Date.now() + (TTL_SECONDS + 2) * 1000;
    for (let i = 0; i < 100 && Date.now() < end; i++) {
      expect(await beatAll()).toBe(true);
      await new Promise((r) => setTimeout(r, 1000));
    }

    // Meanwhile: only "try again" answers, never "not found" (a reaped tunnel) nor a 500.
    expect(new Set(statuses.map((s) => s.status))).toSatisfy((codes: Set<number>) => [...codes].every((c) => c === 200 || c === 503));
    const tunnels = await broker.app.prisma.tunnel.findMany({ where: { id: { in: ids } }, select: { status: true } });
    expect(tunnels.map((t) => t.status)).toEqual(['active', 'active', 'active']);
    expect(await broker.app.prisma.tunnelEvent.count({ where: { tunnelId: { in: ids }, type: 'heartbeat_lapsed' } })).toBe(0);
  });
});
