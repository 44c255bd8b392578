import { startCloudflareEmulator, type CloudflareEmulator } from '../../src/cloudflare/emulator/emulator.js';
import { startTestBroker, TEST_DOMAIN, type TestBroker } from './broker.js';
import { spawnBroker, type BrokerProcess } from './broker-process.js';
import { createTestDatabase, type TestDatabase } from './database.js';
import { testKeyPrefix } from './redis-keys.js';

/**
 * Several brokers on one database, one Redis key space and one Cloudflare (emulator):
 * production behind a load balancer, in miniature. `survivor` runs in this process so
 * tests can inspect it; `spawn()` adds real broker processes that tests may kill.
 */
export interface Cluster {
  db: TestDatabase;
  emulator: CloudflareEmulator;
  prefix: string;
  env: Record<string, string>;
  survivor: TestBroker;
  spawn(name?: string): Promise<BrokerProcess>;
  close(): Promise<void>;
}

export async function startCluster(env: Record<string, string>, options: { survivorReaper?: boolean } = {}): Promise<Cluster> {
  const db = await createTestDatabase();
  const emulator = await startCloudflareEmulator({ zoneName: TEST_DOMAIN });
  const prefix = testKeyPrefix();
  const survivor = await startTestBroker({ env, shared: { db, emulator, redisKeyPrefix: prefix }, startReaper: options.survivorReaper ?? true });
  const processes: BrokerProcess[] = [];
  return {
    db,
    emulator,
    prefix,
    env,
    survivor,
    async spawn(name) {
      const broker = await spawnBroker({ name, databaseUrl: db.url, emulator, redisKeyPrefix: prefix, env });
      processes.push(broker);
      return broker;
    },
    async close() {
      for (const p of processes) await p.proc.stop('SIGKILL');
      await survivor.close();
      await emulator.close();
      await db.drop();
    },
  };
}

/** Waits for a request that arrives after `since` (an index into emulator.requests). */
export async function waitForNewRequest(emulator: CloudflareEmulator, since: number, match: { endpoint: string; answered?: boolean }, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
    const found = emulator.requests.slice(since).some((r) => r.endpoint === match.endpoint && (!match.answered || r.status !== 0));
    if (found) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no new ${match.endpoint} request within ${timeoutMs} ms`);
}
