import { randomUUID } from 'node:crypto';
import { expect, it } from 'vitest';
import { useTestBroker } from '../helpers/broker.js';
import { HEARTBEAT_BUCKET_KEYS, heartbeatKeysOf } from '../../src/tunnels/heartbeat-keys.js';

const broker = useTestBroker();

it('a sweep touches only the due tunnels, however many healthy ones there are', async () => {
  // 20,000 healthy deadlines an hour out, seeded directly, and 3 real tunnels made due now.
  const future = Date.now() + 3600_000;
  for (let batch = 0; batch < 20; batch++) {
    const byKey = new Map<string, Array<string | number>>();
    for (let i = 0; i < 1000; i++) {
      const id = randomUUID();
      const key = heartbeatKeysOf(id).deadlines;
      byKey.set(key, [...(byKey.get(key) ?? []), future, id]);
    }
    for (const [key, args] of byKey) await broker.redis.zadd(key, ...args);
  }
  const due: string[] = [];
  for (let i = 0; i < 3; i++) {
    const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(`user-${i}`), payload: { port: 3000 } });
    due.push(res.json().tunnelId);
    await broker.redis.zadd(heartbeatKeysOf(res.json().tunnelId).deadlines, 0, res.json().tunnelId);
  }
  const calls = broker.emulator.requests.length;

  const result = await broker.app.reaper!.sweep();

  expect(result.claimed).toBe(3);
  expect(result.ended).toBe(3);
  // Upstream work for the three only (DNS delete, connections cleanup, tunnel delete each).
  expect(broker.emulator.requests.length - calls).toBe(9);
  const cards = await Promise.all(HEARTBEAT_BUCKET_KEYS.map((k) => broker.redis.zcard(k.deadlines)));
  expect(cards.reduce((a, b) => a + b, 0)).toBe(20_000);
  const rows = await broker.app.prisma.tunnel.findMany({ where: { id: { in: due } } });
  expect(rows.map((r) => r.status)).toEqual(['ended', 'ended', 'ended']);
});
