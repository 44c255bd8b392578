import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EndpointName } from '../../src/cloudflare/emulator/emulator.js';
import { eventually } from '../helpers/broker.js';
import { startCluster, waitForNewRequest, type Cluster } from '../helpers/cluster.js';

// Short timeouts (and a 1 s budget window) make the create lease (6 x timeout + 2 x timeout) 8 s.
const env = { CLOUDFLARE_TIMEOUT_MS: '1000', CLOUDFLARE_MAX_RETRIES: '0', CLOUDFLARE_BUDGET_WINDOW_SECONDS: '1', REAPER_INTERVAL_SECONDS: '1', MAX_TUNNELS_PER_USER: '1' };
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
  await pending;
  for (const remove of removers) remove();

  // The crash left a row holding the slug and quota, and maybe resources upstream.
  const [row] = await cluster.survivor.app.prisma.tunnel.findMany({ where: { ownerId: userId } });
  expect(row?.status).toBe('creating');
  expect(cluster.emulator.liveTunnels().length - before.tunnels).toBe(expectUpstream.tunnels);
  expect(cluster.emulator.dnsRecords().length - before.dns).toBe(expectUpstream.dns);

  // The survivor's reaper rolls it back once the create's lease runs out.
  await eventually(async () => (await cluster.survivor.app.prisma.tunnel.findUniqueOrThrow({ where: { id: row!.id } })).status === 'ended', { timeoutMs: 40_000, intervalMs: 200, what: 'the abandoned create rolled back' });
  expect(await cluster.survivor.app.prisma.tunnel.findUniqueOrThrow({ where: { id: row!.id } })).toMatchObject({ endReason: 'create_failed' });
  expect(cluster.emulator.liveTunnels().length).toBe(before.tunnels);
  expect(cluster.emulator.dnsRecords().length).toBe(before.dns);
  // Slug and quota (1 here) are free again.
  const again = await cluster.survivor.app.inject({ method: 'POST', url: '/v1/tunnels', headers: cluster.survivor.auth(userId), payload: { port: 3000, requestedSlug: slug } });
  expect(again.statusCode).toBe(201);
}

describe('a broker killed (SIGKILL) mid-create is cleaned up by a survivor', () => {
  it('before the upstream tunnel exists', () => killMidCreate(['tunnel.create'], undefined, { tunnels: 0, dns: 0 }));
  it('after the upstream tunnel, before DNS and ingress', () => killMidCreate(['dns.create', 'tunnel.configuration.put'], 'tunnel.create', { tunnels: 1, dns: 0 }));
  it('after the tunnel and the DNS record, before the ingress', () => killMidCreate(['tunnel.configuration.put'], 'dns.create', { tunnels: 1, dns: 1 }));
});

it('a row left creating with no deadline at all (killed between insert and scheduling) is recovered', async () => {
  const id = randomUUID();
  await cluster.survivor.app.prisma.tunnel.create({
    data: { id, ownerId: 'orphan-owner', slug: `lost-${id.slice(0, 8)}`, hostname: `lost-${id.slice(0, 8)}.tunnels.test`, port: 1, status: 'creating', updatedAt: new Date(Date.now() - 3600_000) },
  });
  await eventually(async () => (await cluster.survivor.app.prisma.tunnel.findUniqueOrThrow({ where: { id } })).status === 'ended', { timeoutMs: 10_000, what: 'recovery' });
});
