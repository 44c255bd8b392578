/**
 * rediss:// end to end: a broker process whose only way to Redis is TLS (the servers have no
 * plain port), verifying the servers' certificates against a CA given the standard Node way
 * (NODE_EXTRA_CA_CERTS), on one node and on a Redis Cluster whose bus is TLS too.
 */
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CloudflareEmulator, startCloudflareEmulator } from '../../src/cloudflare/emulator/emulator.js';
import { freePort } from '../../src/dev-services/free-port.js';
import { spawnServer, waitUntilReady } from '../../src/dev-services/server-process.js';
import { withOneShotRedis } from '../../src/redis/one-shot-client.js';
import { TEST_DOMAIN } from '../helpers/broker.js';
import { type BrokerProcess, spawnBroker } from '../helpers/broker-process.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { trackService } from '../helpers/process.js';
import { PrivateRedisCluster } from '../helpers/redis-cluster.js';
import { testKeyPrefix } from '../helpers/redis-keys.js';
import { tempDir } from '../helpers/temp-dir.js';
import { makeTestCertificates, type TestCertificates } from '../helpers/tls-certs.js';

let certs: TestCertificates;
let db: TestDatabase;
let emulator: CloudflareEmulator;
beforeAll(async () => {
  certs = makeTestCertificates(tempDir('redis-tls'));
  db = await createTestDatabase();
  emulator = await startCloudflareEmulator({ zoneName: TEST_DOMAIN });
});
afterAll(async () => {
  await emulator?.close();
});

/** Create, heartbeat and delete through a broker process on `env`'s Redis. */
async function lifecycle(env: Record<string, string>): Promise<void> {
  let broker: BrokerProcess | undefined;
  try {
    broker = await spawnBroker({ databaseUrl: db.url, emulator, redisKeyPrefix: testKeyPrefix('tls'), env: { ...env, NODE_EXTRA_CA_CERTS: certs.caFile } });
    const userId = `user-${randomUUID()}`;
    const created = await broker.request('POST', '/v1/tunnels', { userId, body: { port: 3000 } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const beat = await broker.request('POST', `/v1/tunnels/${created.body.tunnelId}/heartbeat`, { userId });
    expect(beat.status).toBe(200);
    expect((await broker.request('DELETE', `/v1/tunnels/${created.body.tunnelId}`, { userId })).status).toBe(204);
  } finally {
    await broker?.stop();
  }
}

describe('Redis over TLS', () => {
  it('works on one node reached only through rediss://', async () => {
    const dir = tempDir('redis-tls-node');
    const port = await freePort();
    const server = spawnServer({
      command: 'redis-server',
      args: ['--port', '0', '--tls-port', String(port), '--tls-cert-file', certs.certFile, '--tls-key-file', certs.keyFile, '--tls-ca-cert-file', certs.caFile, '--tls-auth-clients', 'no', '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      logFile: path.join(dir, 'redis.log'),
    });
    trackService(() => server.stop('SIGTERM', 5_000));
    try {
      await waitUntilReady('the TLS redis-server', server, () => withOneShotRedis({ host: '127.0.0.1', port, tls: { ca: certs.ca } }, async (r) => (await r.ping()) === 'PONG'), 15_000);
      await lifecycle({ REDIS_URL: `rediss://127.0.0.1:${port}` });
    } finally {
      await server.stop('SIGTERM', 5_000);
    }
  });

  it('works on a Redis Cluster whose nodes and bus speak only TLS', async () => {
    const cluster = new PrivateRedisCluster({ dir: tempDir('redis-tls-cluster'), tls: certs });
    trackService(() => cluster.stop());
    try {
      await cluster.start();
      expect(cluster.nodesEnv).toMatch(/^rediss:\/\//);
      await lifecycle({ REDIS_CLUSTER_NODES: cluster.nodesEnv });
    } finally {
      await cluster.stop();
    }
  });
});
