import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { freePort } from '../../src/dev-services/free-port.js';
import { type ServerProcess, spawnServer, waitUntilReady } from '../../src/dev-services/server-process.js';
import { withOneShotRedis } from '../../src/redis/one-shot-client.js';

/** Redis Cluster has 16,384 hash slots, split evenly between the primaries. */
const SLOTS = 16_384;
const START_TIMEOUT_MS = 15_000;

export interface ClusterNode {
  host: string;
  port: number;
}

/** PEM files for a cluster that speaks only TLS (clients and the cluster bus). */
export interface ClusterTls {
  certFile: string;
  keyFile: string;
  caFile: string;
  /** The CA's PEM, for clients. */
  ca: string;
}

/**
 * A Redis Cluster of `primaries` primaries (no replicas) made from the machine's own
 * redis-server: cluster mode on free loopback ports, nothing persisted, `noeviction` as
 * production needs. The slots are assigned and the nodes introduced with CLUSTER ADDSLOTSRANGE
 * and CLUSTER MEET (what `redis-cli --cluster create` does), then it waits for cluster_state:ok.
 */
export class PrivateRedisCluster {
  readonly #dir: string;
  readonly #primaries: number;
  readonly #tls: ClusterTls | undefined;
  readonly #servers: ServerProcess[] = [];
  #nodes: ClusterNode[] = [];

  constructor(options: { dir: string; primaries?: number; tls?: ClusterTls }) {
    this.#dir = path.join(options.dir, 'redis-cluster');
    this.#primaries = options.primaries ?? 3;
    this.#tls = options.tls;
  }

  /** How a one-shot client reaches `node` (over TLS when the cluster speaks only TLS). */
  #target(node: ClusterNode): ClusterNode & { tls?: { ca: string } } {
    return this.#tls ? { ...node, tls: { ca: this.#tls.ca } } : node;
  }

  get nodes(): readonly ClusterNode[] {
    return this.#nodes;
  }

  /** REDIS_CLUSTER_NODES for a broker on this cluster (rediss:// when it speaks only TLS). */
  get nodesEnv(): string {
    return this.#nodes.map((n) => (this.#tls ? `rediss://${n.host}:${n.port}` : `${n.host}:${n.port}`)).join(',');
  }

  async start(): Promise<readonly ClusterNode[]> {
    if (this.#nodes.length > 0) return this.#nodes;
    mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
    const nodes: ClusterNode[] = [];
    try {
      for (let i = 0; i < this.#primaries; i++) {
        const port = await freePort();
        const dir = path.join(this.#dir, String(port));
        mkdirSync(dir, { mode: 0o700 });
        const tls = this.#tls;
        // With TLS: no plain port; clients and the cluster bus (port + 10000) speak only TLS.
        const listen = tls ? ['--port', '0', '--tls-port', String(port), '--tls-cluster', 'yes', '--tls-cert-file', tls.certFile, '--tls-key-file', tls.keyFile, '--tls-ca-cert-file', tls.caFile, '--tls-auth-clients', 'no'] : ['--port', String(port)];
        const server = spawnServer({
          command: 'redis-server',
          args: [...listen, '--bind', '127.0.0.1', '--dir', dir, '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000', '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction', '--daemonize', 'no', '--loglevel', 'warning'],
          logFile: path.join(dir, 'redis.log'),
        });
        this.#servers.push(server);
        const node = { host: '127.0.0.1', port };
        await waitUntilReady(`cluster node ${port}`, server, () => withOneShotRedis(this.#target(node), async (r) => (await r.ping()) === 'PONG'), START_TIMEOUT_MS);
        nodes.push(node);
      }
      const perNode = Math.ceil(SLOTS / nodes.length);
      for (const [i, node] of nodes.entries()) {
        const first = i * perNode;
        const last = Math.min(SLOTS, first + perNode) - 1;
        await withOneShotRedis(this.#target(node), (r) => r.call('CLUSTER', 'ADDSLOTSRANGE', String(first), String(last)));
      }
      await withOneShotRedis(this.#target(nodes[0]!), async (r) => {
        for (const other of nodes.slice(1)) await r.call('CLUSTER', 'MEET', other.host, String(other.port));
      });
      const ready = async () => {
        for (const node of nodes) {
          const info = String(await withOneShotRedis(this.#target(node), (r) => r.call('CLUSTER', 'INFO')));
          if (!info.includes('cluster_state:ok') || !info.includes(`cluster_known_nodes:${nodes.length}`)) return false;
        }
        return true;
      };
      await waitUntilReady('the Redis Cluster', undefined, ready, START_TIMEOUT_MS, 100);
    } catch (error) {
      await this.stop();
      throw error;
    }
    this.#nodes = nodes;
    return nodes;
  }

  async stop(): Promise<void> {
    this.#nodes = [];
    await Promise.all(this.#servers.splice(0).map((s) => s.stop('SIGTERM', 5_000)));
  }
}

/** Which primary serves `key` (a key with a hash tag: any key of its bucket). */
export async function primaryServing(nodes: readonly ClusterNode[], key: string): Promise<ClusterNode> {
  const slot = Number(await withOneShotRedis(nodes[0]!, (r) => r.call('CLUSTER', 'KEYSLOT', key)));
  const shards = (await withOneShotRedis(nodes[0]!, (r) => r.call('CLUSTER', 'SLOTS'))) as Array<[number, number, [string, number, ...unknown[]]]>;
  for (const [first, last, [host, port]] of shards) {
    if (slot >= first && slot <= last) return { host: host === '' ? nodes[0]!.host : host, port: Number(port) };
  }
  throw new Error(`no primary serves slot ${slot}`);
}
