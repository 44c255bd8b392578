import { afterAll, beforeAll, expect, it } from 'vitest';
import { startCloudflareEmulator, type CloudflareEmulator } from '../../src/cloudflare/emulator/emulator.js';
import { createPrismaClient } from '../../src/plugins/prisma.js';
import { TEST_DOMAIN } from '../helpers/broker.js';
import { spawnBroker } from '../helpers/broker-process.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { testKeyPrefix } from '../helpers/redis-keys.js';

let db: TestDatabase;
let emulator: CloudflareEmulator;
beforeAll(async () => {
  db = await createTestDatabase();
  emulator = await startCloudflareEmulator({ zoneName: TEST_DOMAIN });
});
afterAll(async () => {
  await emulator?.close();
  await db?.drop();
});

it('SIGTERM finishes the in-flight create, refuses new connections, closes the pools and exits 0', async () => {
  const broker = await spawnBroker({ databaseUrl: db.url, emulator, redisKeyPrefix: testKeyPrefix() });
  // Slow upstream: the create is mid-flight when the signal arrives.
  emulator.injectFault({ endpoint: 'tunnel.create', kind: 'latency', latencyMs: 1500, times: 1 });
  const inFlight = broker.request('POST', '/v1/tunnels', { userId: 'alice', body: { port: 3000 } });
  await emulator.waitForRequest({ endpoint: 'tunnel.create' });
  broker.proc.child.kill('SIGTERM');

  const created = await inFlight;
  expect(created.status).toBe(201);
  expect(await broker.proc.exited, broker.proc.output()).toBe(0);
  await expect(fetch(`${broker.baseUrl}/healthz`)).rejects.toThrow();
  expect(broker.proc.output()).toMatch(/shutting down/);

  // Nothing half-created: the row is active and its upstream tunnel and DNS record exist.
  const prisma = createPrismaClient(db.url);
  try {
    const row = await prisma.tunnel.findUniqueOrThrow({ where: { id: created.body.tunnelId } });
    expect(row.status).toBe('active');
    expect(emulator.liveTunnels().some((t) => t.id === row.cfTunnelId)).toBe(true);
    expect(emulator.dnsRecords().some((r) => r.id === row.dnsRecordId)).toBe(true);
  } finally {
    await prisma.$disconnect();
  }
});
