import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EndpointName } from '../../src/cloudflare/emulator/emulator.js';
import { eventually } from '../helpers/broker.js';
import { startCluster, waitForNewRequest, type Cluster } from '../helpers/cluster.js';

// Short timeouts and a 1 s budget window make the end lease (5 x timeout + 2 s + 2 x timeout) 9 s.
const env = { CLOUDFLARE_TIMEOUT_MS: '1000', CLOUDFLARE_MAX_RETRIES: '0', CLOUDFLARE_BUDGET_WINDOW_SECONDS: '1', REAPER_INTERVAL_SECONDS: '1' };
let cluster: Cluster;
beforeAll(async () => {
  cluster = await startCluster(env);
});
afterAll(async () => {
  await cluster?.close();
});

async function killMidDelete(hangOn: EndpointName, waitFor?: EndpointName) {
  const victim = await cluster.spawn('victim');
  const userId = `user-${randomUUID()}`;
  const created = await victim.request('POST', '/v1/tunnels', { userId, body: { port: 3000 } });
  expect(created.status).toBe(201);
  const id = created.body.tunnelId as string;
  const row = await cluster.survivor.app.prisma.tunnel.findUniqueOrThrow({ where: { id } });

  const since = cluster.emulator.requests.length;
  const remove = cluster.emulator.injectFault({ endpoint: hangOn, kind: 'hang' });
  const pending = victim.request('DELETE', `/v1/tunnels/${id}`, { userId }).catch(() => undefined);
  await waitForNewRequest(cluster.emulator, since, { endpoint: hangOn });
  if (waitFor) await waitForNewRequest(cluster.emulator, since, { endpoint: waitFor, answered: true });
  await victim.kill9();
  await pending;
  remove();

  expect((await cluster.survivor.app.prisma.tunnel.findUniqueOrThrow({ where: { id } })).status).toBe('ending');
  // The heartbeat is already refused: the tunnel is on its way out.
  const hb = await cluster.survivor.app.inject({ method: 'POST', url: `/v1/tunnels/${id}/heartbeat`, headers: cluster.survivor.auth(userId) });
  expect(hb.statusCode).toBe(404);

  await eventually(async () => (await cluster.survivor.app.prisma.tunnel.findUniqueOrThrow({ where: { id } })).status === 'ended', { timeoutMs: 40_000, intervalMs: 200, what: 'the interrupted delete completed' });
  expect(await cluster.survivor.app.prisma.tunnel.findUniqueOrThrow({ where: { id } })).toMatchObject({ endReason: 'deleted' });
  expect(cluster.emulator.liveTunnels().some((t) => t.id === row.cfTunnelId)).toBe(false);
  expect(cluster.emulator.dnsRecords().some((r) => r.id === row.dnsRecordId)).toBe(false);
}

describe('a broker killed (SIGKILL) mid-delete has its delete completed by a survivor', () => {
  it('while the DNS record is being deleted', () => killMidDelete('dns.delete'));
  it('after DNS and connections, while the tunnel is being deleted', () => killMidDelete('tunnel.delete', 'dns.delete'));
});
