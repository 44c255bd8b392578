/**
 * One primary of a Redis Cluster loses its data (restarted without persistence, or flushed)
 * while the others keep theirs. Only the heartbeat buckets that node serves are missing their
 * epoch: the broker notices them by themselves, rebuilds just those from PostgreSQL, keeps
 * answering the other buckets' heartbeats as if nothing happened, and reaps nothing because
 * of the loss.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { withOneShotRedis } from '../../src/redis/one-shot-client.js';
import { HEARTBEAT_BUCKET_KEYS, heartbeatKeysOf } from '../../src/tunnels/heartbeat-keys.js';
import { eventually, isHeartbeating, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { trackService } from '../helpers/process.js';
import { type ClusterNode, PrivateRedisCluster, primaryServing } from '../helpers/redis-cluster.js';
import { tempDir } from '../helpers/temp-dir.js';

const TTL_SECONDS = 2;
const env = { TUNNEL_TTL_SECONDS: String(TTL_SECONDS), HEARTBEAT_INTERVAL_SECONDS: '1', REAPER_INTERVAL_SECONDS: '1', MAX_TUNNELS_PER_USER: '50', CREATE_RATE_LIMIT_PER_MINUTE: '100' };

let cluster: PrivateRedisCluster;
let broker: TestBroker;
beforeAll(async () => {
  cluster = new PrivateRedisCluster({ dir: tempDir('cluster-node-loss') });
  trackService(() => cluster.stop());
  await cluster.start();
  broker = await startTestBroker({ env: { ...env, REDIS_CLUSTER_NODES: cluster.nodesEnv }, startReaper: true });
});
afterAll(async () => {
  await broker?.close();
  await cluster?.stop();
});

const sameNode = (a: ClusterNode, b: ClusterNode) => a.host === b.host && a.port === b.port;

/** Heartbeats one tunnel every 400 ms (inside its 2 s TTL) until stopped, recording the answers. */
function keepAlive(userId: string, id: string) {
  let running = true;
  const codes: number[] = [];
  const done = (async () => {
    for (let i = 0; running && i < 1_000; i++) {
      codes.push((await broker.app.inject({ method: 'POST', url: `/v1/tunnels/${id}/heartbeat`, headers: broker.auth(userId) })).statusCode);
      await new Promise((r) => setTimeout(r, 400));
    }
  })();
  return { codes, stop: async () => { running = false; await done; } };
}

it('rebuilds only the buckets of the node that lost its data, answers the others as usual, and reaps nothing because of it', async () => {
  const userId = `user-${randomUUID()}`;
  const ids: string[] = [];
  for (let i = 0; i < 24; i++) {
    const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000 + i } });
    expect(res.statusCode).toBe(201);
    ids.push(res.json().tunnelId as string);
  }
  const nodeOf = new Map<string, ClusterNode>();
  for (const id of ids) nodeOf.set(id, await primaryServing(cluster.nodes, heartbeatKeysOf(id).deadlines));
  const lostNode = nodeOf.get(ids[0]!)!;
  const onLost = ids.filter((id) => sameNode(nodeOf.get(id)!, lostNode));
  const elsewhere = ids.filter((id) => !sameNode(nodeOf.get(id)!, lostNode));
  expect(onLost.length).toBeGreaterThanOrEqual(2);
  expect(elsewhere.length).toBeGreaterThanOrEqual(2);
  // One tunnel on the lost node goes silent; every other tunnel keeps heartbeating.
  const silent = onLost[0]!;
  const beating = ids.filter((id) => id !== silent);
  await broker.app.reaper!.sweep();
  const prefix = broker.config.redis.keyPrefix;
  const epochsBefore = await Promise.all(HEARTBEAT_BUCKET_KEYS.map((k) => broker.redis.get(k.epoch)));
  const lostBuckets = new Set((await Promise.all(HEARTBEAT_BUCKET_KEYS.map(async (k) => ((sameNode(await primaryServing(cluster.nodes, k.deadlines), lostNode)) ? k.bucket : -1)))).filter((b) => b >= 0));
  const loops = beating.map((id) => ({ id, loop: keepAlive(userId, id) }));
  try {
    const rebuildsBefore = broker.logs.events('heartbeat_state.rebuilt').length;
    // The node forgets everything it held, as a restart without persistence would: each
    // bucket's keys at once (one script per hash tag), so no rebuild can land between the
    // deletions of one bucket's keys and be half undone by the next.
    const removed = await withOneShotRedis(lostNode, async (r) => {
      const keys = await r.keys(`${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`);
      const bySlot = new Map<string, string[]>();
      for (const key of keys) {
        const tag = /\{[^}]+\}/.exec(key)?.[0] ?? key;
        bySlot.set(tag, [...(bySlot.get(tag) ?? []), key]);
      }
      for (const group of bySlot.values()) await r.eval("for i = 1, #KEYS do redis.call('DEL', KEYS[i]) end return #KEYS", group.length, ...group);
      return keys.length;
    });
    expect(removed).toBeGreaterThan(0);
    const lostAt = Date.now();

    await eventually(() => broker.logs.events('heartbeat_state.rebuilt').length > rebuildsBefore, { timeoutMs: 5_000, what: 'a rebuild' });
    // A bucket's loss is found by the first heartbeat to reach it: each is rebuilt within moments.
    await eventually(async () => (await Promise.all(onLost.map((id) => isHeartbeating(broker.redis, id)))).every(Boolean), { timeoutMs: 5_000, what: 'every tunnel of the lost node heartbeating again' });
    // The lost buckets were rebuilt; the others kept their epoch (they were never rebuilt).
    const epochsAfter = await Promise.all(HEARTBEAT_BUCKET_KEYS.map((k) => broker.redis.get(k.epoch)));
    for (const k of HEARTBEAT_BUCKET_KEYS) {
      if (lostBuckets.has(k.bucket)) {
        expect(epochsAfter[k.bucket], `bucket ${k.bucket}`).not.toBeNull();
        expect(epochsAfter[k.bucket], `bucket ${k.bucket}`).not.toBe(epochsBefore[k.bucket]);
      } else expect(epochsAfter[k.bucket], `bucket ${k.bucket}`).toBe(epochsBefore[k.bucket]);
    }

    // For one full TTL after the loss, nothing is reaped; then the silent tunnel is, and only it.
    await eventually(() => Date.now() - lostAt >= TTL_SECONDS * 1000 - 200, { timeoutMs: 5_000, intervalMs: 100 });
    const statusOf = async (id: string) => (await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id } })).status;
    expect(await statusOf(silent)).toBe('active');
    await eventually(async () => (await statusOf(silent)) === 'ended', { timeoutMs: (TTL_SECONDS + 4) * 1000, what: 'the silent tunnel reaped' });
    const ended = await broker.app.prisma.tunnel.count({ where: { id: { in: beating }, status: { not: 'active' } } });
    expect(ended).toBe(0);
  } finally {
    for (const { loop } of loops) await loop.stop();
  }
  // Tunnels on the other nodes never noticed; those on the lost node heard at worst "retry".
  for (const { id, loop } of loops) {
    const allowed = onLost.includes(id) ? [200, 503] : [200];
    expect(loop.codes.filter((c) => !allowed.includes(c)), id).toEqual([]);
    expect(loop.codes.filter((c) => c === 200).length, id).toBeGreaterThan(2);
  }
});
