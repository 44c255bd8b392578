import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EndpointName } from '../../src/cloudflare/emulator/emulator.js';
import { eventually } from '../helpers/broker.js';
import { startCluster, waitForNewRequest, type Cluster } from '../helpers/cluster.js';

// The numbers: a 3 s TTL and a reaper every second. The lease keeps its default (5 s):
// a killed create is cleaned up within about a lease plus a reaper interval, however many
// retries a create might have made.
const env = { TUNNEL_TTL_SECONDS: '3', HEARTBEAT_INTERVAL_SECONDS: '1', REAPER_INTERVAL_SECONDS: '1', MAX_TUNNELS_PER_USER: '5' };
/** The bound the issue sets for a create killed mid-way: fully cleaned up by another broker within this. */
const CLEANUP_BOUND_MS = 12_000;
let cluster: Cluster;
beforeAll(async () => {
  cluster = await startCluster(env);
});
afterAll(async () => {
  await cluster?.close();
});

/**
 * Kills a broker with SIGKILL while its create waits on `hangOn`, after `waitFor` has been
 * answered upstream, then checks the survivor rolls the create back completely.
 */
async function killMidCreate(hangOn: EndpointName[], waitFor: EndpointName | undefined, expectUpstream: { tunnels: number; dns: number }) {
  const victim = await cluster.spawn('victim');
  const userId = `user-${randomUUID()}`;
  const slug = `crash-${randomUUID().slice(0, 8)}`;
  const before = { tunnels: cluster.emulator.liveTunnels().length, dns: cluster.emulator.dnsRecords().length };
  const since = cluster.emulator.requests.length;
  const removers = hangOn.map((endpoint) => cluster.emulator.injectFault({ endpoint, kind: 'hang' }));
  const pending = victim.request('POST', '/v1/tunnels', { userId, body: { port: 3000, requestedSlug: slug } }).catch(() => undefined);
  await waitForNewRequest(cluster.emulator, since, { endpoint: hangOn[0]! });
  if (waitFor) await waitForNewRequest(cluster.emulator, since, { endpoint: waitFor, answered: true });
  await victim.kill9();
  const killedAt = Date.now();
  await pending;
  for (const remove of removers) remove();

  // The crash left a row holding the slug and quota, and maybe resources upstream.
  const [row] = await cluster.survivor.app.prisma.tunnel.findMany({ where: { ownerId: userId } });
  expect(row?.status).toBe('creating');
  expect(cluster.emulator.liveTunnels().length - before.tunnels).toBe(expectUpstream.tunnels);
  expect(cluster.emulator.dnsRecords().length - before.dns).toBe(expectUpstream.dns);

  // The survivor's reaper takes the create over once its lease lapses, and rolls it back.
  const clean = async () =>
    (await cluster.survivor.app.prisma.tunnel.findUniqueOrThrow({ where: { id: row!.id } })).status === 'ended'
    && cluster.emulator.liveTunnels().length === before.tunnels && cluster.emulator.dnsRecords().length === before.dns;
  await eventually(clean, { timeoutMs: CLEANUP_BOUND_MS + 5_000, intervalMs: 100, what: 'the abandoned create rolled back' });
  expect(Date.now() - killedAt).toBeLessThanOrEqual(CLEANUP_BOUND_MS);
  expect(await cluster.survivor.app.prisma.tunnel.findUniqueOrThrow({ where: { id: row!.id } })).toMatchObject({ endReason: 'create_failed' });
  // Slug and quota are free again: the user can open 5 tunnels, the first with that slug.
  const opened: string[] = [];
  for (let i = 0; i < 5; i++) {
    const again = await cluster.survivor.app.inject({ method: 'POST', url: '/v1/tunnels', headers: cluster.survivor.auth(userId), payload: { port: 3000, ...(i === 0 ? { requestedSlug: slug } : {}) } });
    expect(again.statusCode).toBe(201);
    opened.push(again.json().tunnelId as string);
  }
  // Leave upstream as it was, so the next test's snapshot is not disturbed by these being reaped.
  for (const id of opened) {
    expect((await cluster.survivor.app.inject({ method: 'DELETE', url: `/v1/tunnels/${id}`, headers: cluster.survivor.auth(userId) })).statusCode).toBe(204);
  }
}

describe(`a broker killed (SIGKILL) mid-create is fully cleaned up by a survivor within ${CLEANUP_BOUND_MS / 1000} s`, () => {
  it('before the upstream tunnel exists', () => killMidCreate(['tunnel.create'], undefined, { tunnels: 0, dns: 0 }));
  it('after the upstream tunnel, before DNS and ingress', () => killMidCreate(['dns.create', 'tunnel.configuration.put'], 'tunnel.create', { tunnels: 1, dns: 0 }));
  it('after the tunnel and the DNS record, before the ingress', () => killMidCreate(['tunnel.configuration.put'], 'dns.create', { tunnels: 1, dns: 1 }));
});

it('a row left creating with no deadline at all (killed between insert and scheduling) is recovered', async () => {
  const id = randomUUID();
  await cluster.survivor.app.prisma.tunnel.create({
    data: { id, ownerId: 'orphan-owner', slug: `lost-${id.slice(0, 8)}`, hostname: `lost-${id.slice(0, 8)}.tunnels.test`, port: 1, status: 'creating', leaseGeneration: 1, leaseExpiresAt: new Date(Date.now() - 3600_000) },
  });
  await eventually(async () => (await cluster.survivor.app.prisma.tunnel.findUniqueOrThrow({ where: { id } })).status === 'ended', { timeoutMs: 10_000, what: 'recovery' });
});
