import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Reaper } from '../../src/reaper/reaper.js';
import { eventually, useTestBroker, isHeartbeating } from '../helpers/broker.js';
import { heartbeatKeysOf } from '../../src/tunnels/heartbeat-keys.js';

// A 2 s TTL with 1 s heartbeats: the smallest the config allows, so expiry is quick to observe.
const TTL_SECONDS = 2;
const broker = useTestBroker({
    env: { TUNNEL_TTL_SECONDS: String(TTL_SECONDS), HEARTBEAT_INTERVAL_SECONDS: '1', REAPER_INTERVAL_SECONDS: '1', MAX_TUNNELS_PER_USER: '2' },
    startReaper: true,
  });

async function createTunnel(userId: string, requestedSlug?: string) {
  const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000, requestedSlug } });
  expect(res.statusCode).toBe(201);
  return res.json() as { tunnelId: string; hostname: string };
}

describe('expiry', () => {
  it('reaps a silent tunnel upstream and frees its slug and quota, while a heartbeating one survives', async () => {
    const userId = `user-${randomUUID()}`;
    const slug = `silent-${randomUUID().slice(0, 8)}`;
    const silent = await createTunnel(userId, slug);
    const alive = await createTunnel(userId);
    const silentRow = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: silent.tunnelId } });
    const aliveRow = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: alive.tunnelId } });
    const createdAt = Date.now();

    // Heartbeat one tunnel every 500 ms (well inside its 2 s TTL) until the other is reaped.
    let beating = true;
    const beats = (async () => {
      while (beating) {
        const res = await broker.app.inject({ method: 'POST', url: `/v1/tunnels/${alive.tunnelId}/heartbeat`, headers: broker.auth(userId) });
        expect(res.statusCode).toBe(200);
        await new Promise((r) => setTimeout(r, 500));
      }
    })();

    try {
      // Reaped within TTL + REAPER_INTERVAL (plus a sweep's own time).
      const ended = await eventually(async () => {
        const row = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: silent.tunnelId } });
        return row.status === 'ended' ? row : null;
      }, { timeoutMs: (TTL_SECONDS + 1) * 1000 + 3000, what: 'the silent tunnel to be reaped' });
      expect(Date.now() - createdAt).toBeGreaterThanOrEqual(TTL_SECONDS * 1000 - 100);
      expect(ended.endReason).toBe('heartbeat_lapsed');
      expect(broker.emulator.liveTunnels().some((t) => t.id === silentRow.cfTunnelId)).toBe(false);
      expect(broker.emulator.dnsRecords().some((r) => r.name === silent.hostname)).toBe(false);
      // The log line follows the row update; wait for it rather than race it.
      await eventually(() => broker.logs.events('tunnel.reaped').some((l) => l.tunnelId === silent.tunnelId), { timeoutMs: 2000, what: 'the tunnel.reaped log line' });

      // Slug and quota (MAX 2 here) are free again.
      const again = await createTunnel(`user-${randomUUID()}`, slug);
      expect(again.hostname).toBe(silent.hostname);
      await createTunnel(userId);

      // Several TTLs later the heartbeating one is still alive upstream and in the database.
      const until = createdAt + 3 * TTL_SECONDS * 1000;
      await eventually(() => Date.now() > until, { timeoutMs: 3 * TTL_SECONDS * 1000 + 1000, intervalMs: 200 });
      expect(await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: alive.tunnelId } })).toMatchObject({ status: 'active' });
      expect(broker.emulator.liveTunnels().some((t) => t.id === aliveRow.cfTunnelId)).toBe(true);
    } finally {
      beating = false;
      await beats;
    }
  });

  it('refuses a heartbeat that arrives after the deadline, even before the sweep', async () => {
    const userId = `user-${randomUUID()}`;
    const t = await createTunnel(userId);
    await eventually(async () => !(await isHeartbeating(broker.redis, t.tunnelId)), { timeoutMs: TTL_SECONDS * 1000 + 2000 });
    const res = await broker.app.inject({ method: 'POST', url: `/v1/tunnels/${t.tunnelId}/heartbeat`, headers: broker.auth(userId) });
    expect(res.statusCode).toBe(404);
  });
});

describe('two reapers', () => {
  it('never end one tunnel twice', async () => {
    const userIds = Array.from({ length: 6 }, () => `user-${randomUUID()}`);
    const created = [];
    for (const u of userIds) created.push(await createTunnel(u));
    const ids = new Set(created.map((c) => c.tunnelId));
    await broker.app.reaper!.stop();
    try {
      // Make them all due at once, then let two independent reapers race for them.
      for (const id of ids) await broker.redis.zadd(heartbeatKeysOf(id).deadlines, 0, id);
      // Small batches make the two interleave batch by batch.
      const make = () => new Reaper({ service: broker.app.tunnels, heartbeats: broker.app.heartbeats, logger: broker.app.log, concurrency: 1, batchSize: 1 });
      const [a, b] = await Promise.all([make().sweep(), make().sweep()]);
      expect(a.claimed + b.claimed).toBeGreaterThanOrEqual(ids.size);
      const rows = await broker.app.prisma.tunnel.findMany({ where: { id: { in: [...ids] } } });
      expect(rows.every((r) => r.status === 'ended')).toBe(true);
      // Each tunnel deleted upstream exactly once, whichever reaper (or the timer) got it.
      for (const row of rows) {
        const deletes = broker.emulator.requests.filter((r) => r.endpoint === 'tunnel.delete' && r.path.includes(row.cfTunnelId!));
        expect(deletes).toHaveLength(1);
      }
    } finally {
      broker.app.reaper!.start();
    }
  });
});

describe('Reaper object', () => {
  it('start and stop are idempotent and sweeps do not overlap', async () => {
    const reaper = new Reaper({ service: broker.app.tunnels, heartbeats: broker.app.heartbeats, logger: broker.app.log, intervalMs: 60_000 });
    reaper.start();
    reaper.start();
    expect(reaper.started).toBe(true);
    const one = reaper.sweep();
    const two = reaper.sweep();
    expect(two).toBe(one);
    await one;
    await reaper.stop();
    await reaper.stop();
    expect(reaper.started).toBe(false);
  });
});
