import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../../src/dev-services/free-port.js';
import { withOneShotRedis } from '../../src/redis/one-shot-client.js';
import { type ServerProcess, spawnServer, waitUntilReady } from '../../src/dev-services/server-process.js';
import { trackService } from './process.js';
import { tempDir } from './temp-dir.js';

export const SENTINEL_PRIMARY_NAME = 'tbprimary';

export interface SentinelTopology {
  /** REDIS_SENTINELS for the broker. */
  sentinels: string;
  primaryPort: number;
  replicaPort: number;
  /** Kills the primary as a crash would (SIGKILL). */
  killPrimary(): Promise<void>;
  /** How many keys under `prefix` the server on `port` holds. */
  keyCount(port: number, prefix: string): Promise<number>;
  /** The port of the server the sentinels call primary now. */
  currentPrimaryPort(): Promise<number>;
  close(): Promise<void>;
}

/**
 * One primary, one replica and three sentinels (quorum 2) on loopback, from the machine's
 * redis-server, with a short down-after so a failover takes a few seconds.
 */
export async function startSentinelTopology(): Promise<SentinelTopology> {
  const dir = tempDir('sentinel');
  const servers: ServerProcess[] = [];
  const close = async () => {
    for (const server of servers.reverse()) await server.stop('SIGKILL', 0);
  };
  trackService(close);
  const redisServer = (name: string, args: string[]) => {
    const server = spawnServer({ command: 'redis-server', args, logFile: path.join(dir, `${name}.log`), cwd: dir });
    servers.push(server);
    return server;
  };
  const dataArgs = (port: number) => ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--dbfilename', `dump-${port}.rdb`];

  const primaryPort = await freePort();
  const primary = redisServer('primary', dataArgs(primaryPort));
  await waitUntilReady('redis primary', primary, () => ping(primaryPort), 10_000);
  const replicaPort = await freePort();
  const replica = redisServer('replica', [...dataArgs(replicaPort), '--replicaof', '127.0.0.1', String(primaryPort)]);
  await waitUntilReady('redis replica in sync', replica, async () => /master_link_status:up/.test(await info(replicaPort, 'replication')), 15_000);

  const sentinelPorts: number[] = [];
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    const conf = path.join(dir, `sentinel-${i}.conf`);
    writeFileSync(conf, [
      `port ${port}`,
      'bind 127.0.0.1',
      `sentinel monitor ${SENTINEL_PRIMARY_NAME} 127.0.0.1 ${primaryPort} 2`,
      `sentinel down-after-milliseconds ${SENTINEL_PRIMARY_NAME} 1000`,
      `sentinel failover-timeout ${SENTINEL_PRIMARY_NAME} 5000`,
      `sentinel parallel-syncs ${SENTINEL_PRIMARY_NAME} 1`,
    ].join('\n'));
    const sentinel = redisServer(`sentinel-${i}`, [conf, '--sentinel']);
    await waitUntilReady('redis sentinel', sentinel, () => ping(port), 10_000);
    sentinelPorts.push(port);
  }
  // Every sentinel has found the replica (through the primary) and the other sentinels.
  await waitUntilReady('sentinels ready', undefined, async () => {
    for (const port of sentinelPorts) {
      const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      client.on('error', () => {});
      try {
        await client.connect();
        const replicas = (await client.call('SENTINEL', 'REPLICAS', SENTINEL_PRIMARY_NAME)) as unknown[];
        const peers = (await client.call('SENTINEL', 'SENTINELS', SENTINEL_PRIMARY_NAME)) as unknown[];
        if (replicas.length < 1 || peers.length < 2) return false;
      } finally {
        client.disconnect();
      }
    }
    return true;
  }, 20_000, 200);

  return {
    sentinels: sentinelPorts.map((p) => `127.0.0.1:${p}`).join(','),
    primaryPort,
    replicaPort,
    killPrimary: () => primary.stop('SIGKILL', 0),
    keyCount: (port, prefix) => withNode(port, async (r) => (await r.keys(`${prefix}*`)).length),
    async currentPrimaryPort() {
      const client = new Redis({ port: sentinelPorts[0], host: '127.0.0.1', maxRetriesPerRequest: 0 });
      client.on('error', () => {});
      try {
        const [, port] = (await client.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', SENTINEL_PRIMARY_NAME)) as [string, string];
        return Number(port);
      } finally {
        client.disconnect();
      }
    },
    close,
  };
}

function withNode<T>(port: number, fn: (redis: Redis) => Promise<T>): Promise<T> {
  return withOneShotRedis({ host: '127.0.0.1', port }, fn);
}

const ping = (port: number) => withNode(port, async (r) => (await r.ping()) === 'PONG');
const info = (port: number, section: string) => withNode(port, (r) => r.info(section));
