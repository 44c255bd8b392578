import { expect, it } from 'vitest';
import { createPrismaClient } from '../../src/plugins/prisma.js';
import { startTestBroker } from '../helpers/broker.js';
import { deleteKeysUnderPrefix } from '../helpers/redis-keys.js';
import { waitForNewRequest } from '../helpers/cluster.js';
import { heartbeatKeysOf } from '../../src/tunnels/heartbeat-keys.js';

it('closing the app (as SIGTERM does) lets the running sweep finish before the pools close', async () => {
  const broker = await startTestBroker({ startReaper: false });
  let closed = false;
  try {
    const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth('u'), payload: { port: 3000 } });
    const id = res.json().tunnelId as string;
    await broker.redis.zadd(heartbeatKeysOf(id).deadlines, 0, id);
    broker.emulator.injectFault({ endpoint: 'tunnel.delete', kind: 'latency', latencyMs: 800 });
    broker.app.reaper!.start();
    const since = broker.emulator.requests.length;
    const sweep = broker.app.reaper!.sweep();
    await waitForNewRequest(broker.emulator, since, { endpoint: 'tunnel.delete' });

    // Mid-sweep: the delete is still in flight upstream.
    const [row] = await broker.app.prisma.tunnel.findMany({ where: { id } });
    expect(row?.status).toBe('ending');
    await broker.app.close();
    closed = true;

    const result = await sweep;
    expect(result.ended).toBe(1);
    // The sweep completed its database write before PostgreSQL was disconnected.
    const fresh = createPrismaClient(broker.db.url);
    try {
      expect((await fresh.tunnel.findUniqueOrThrow({ where: { id } })).status).toBe('ended');
    } finally {
      await fresh.$disconnect();
    }
  } finally {
    if (!closed) await broker.app.close();
    await broker.emulator.close();
    await broker.db.drop();
    await deleteKeysUnderPrefix(broker.redis, broker.config.redis.keyPrefix);
    broker.redis.disconnect();
  }
});
