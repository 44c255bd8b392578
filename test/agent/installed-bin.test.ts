import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type InstalledAgent, installAgentFromTarball, runAgent, runAgentToEnd, startFlakyProxy, tunnelIdInToken, useAgentBroker } from '../helpers/agent.js';
import { eventually } from '../helpers/broker.js';
import { REPO_ROOT } from '../helpers/process.js';

// The agent the way a user gets it: packed, installed from the tarball with no registry, and
// run as the installed `tunnel` bin, against a real broker and a fake cloudflared. Heartbeats
// every second, and a TTL long enough that a loaded machine's late one does not lapse the tunnel.
const t = useAgentBroker({ env: { TUNNEL_TTL_SECONDS: '30', HEARTBEAT_INTERVAL_SECONDS: '1' } });

const agentPackage = JSON.parse(readFileSync(join(REPO_ROOT, 'packages/agent/package.json'), 'utf8')) as { version: string };

let installed: InstalledAgent;
let app: Server;
let appPort: number;
beforeAll(async () => {
  installed = await installAgentFromTarball();
  // Something listening on the port the agent exposes. It reads what it is sent (a paused
  // socket would never see the peer's close, and app.close() would wait for it forever).
  app = createServer((socket) => socket.resume().end());
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  appPort = (app.address() as { port: number }).port;
}, 180_000);
afterAll(async () => {
  await new Promise<void>((resolve) => (app ? app.close(() => resolve()) : resolve()));
  installed?.remove();
});

describe('the agent installed from its tarball', () => {
  it('is one package with no dependencies: the tarball holds the bundle, and the install adds nothing else', () => {
    const manifest = JSON.parse(readFileSync(join(installed.dir, 'node_modules/@tunnel-broker/agent/package.json'), 'utf8')) as Record<string, unknown>;
    expect(manifest.dependencies).toBeUndefined();
    expect(manifest.bin).toEqual({ tunnel: 'dist/tunnel.mjs' });
    expect(readdirSync(join(installed.dir, 'node_modules')).filter((name) => !name.startsWith('.'))).toEqual(['@tunnel-broker']);
    expect(readdirSync(join(installed.dir, 'node_modules/@tunnel-broker'))).toEqual(['agent']);
    expect(readdirSync(join(installed.dir, 'node_modules/@tunnel-broker/agent/dist')).sort()).toEqual(['THIRD-PARTY-LICENSES.txt', 'tunnel.mjs']);
  });

  it('`tunnel --version` prints the package version and `tunnel --help` lists the commands', async () => {
    const version = await runAgentToEnd(['--version'], {}, { entry: installed.bin });
    expect(version).toEqual({ code: 0, output: `${agentPackage.version}\n` });
    const help = await runAgentToEnd(['--help'], {}, { entry: installed.bin });
    expect(help.code).toBe(0);
    expect(help.output).toMatch(/^Usage: tunnel /);
    for (const command of ['connect [options] <port>', 'list [options]', 'stop [options] <tunnel>', 'login [options]']) expect(help.output).toContain(command);
  });

  it('`tunnel connect <port>` exposes the port: the tunnel is made, cloudflared runs with its token, heartbeats arrive, Ctrl-C ends it', async () => {
    const { userId, fake, env } = t.user('installed');
    // A proxy in front of the broker records what the agent sends.
    const proxy = await startFlakyProxy(t.url);
    t.defer(() => proxy.close());
    const agent = runAgent(['connect', String(appPort)], { ...env, TUNNEL_BROKER_URL: proxy.url }, installed.bin);
    t.defer(() => agent.stop('SIGKILL'));

    await agent.waitFor(/Forwarding\s+https:\/\//);
    const list = await t.broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: t.broker.auth(userId) });
    const [tunnel] = (list.json() as { tunnels: Array<{ id: string; hostname: string; port: number }> }).tunnels;
    expect(agent.output()).toContain(`https://${tunnel!.hostname}  ->  http://localhost:${appPort}`);
    // The tunnel goes to the agent's recording proxy; the bundled inspector answers and records
    // what reaches it (this app closes every connection at once: a 502 page naming the port).
    expect(tunnel!.port).not.toBe(appPort);
    const inspectorUrl = /Inspector\s+(http:\/\/127\.0\.0\.1:\d+)/.exec(agent.output())![1]!;
    const visit = await fetch(`http://127.0.0.1:${tunnel!.port}/through`);
    expect(visit.status).toBe(502);
    expect(await visit.text()).toContain(`localhost:${appPort}`);
    const page = await fetch(inspectorUrl);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<title>Tunnel inspector</title>');
    const recorded = (await (await fetch(`${inspectorUrl}/api/requests`)).json()) as { requests: Array<{ path: string; status: number }> };
    expect(recorded.requests).toMatchObject([{ path: '/through', status: 502 }]);
    const [run] = await eventually(() => (fake.runs().length > 0 ? fake.runs() : undefined), { timeoutMs: 30_000, what: 'cloudflared to start' });
    const row = await t.broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: tunnel!.id } });
    expect(tunnelIdInToken(run!.token!)).toBe(row.cfTunnelId);

    // Heartbeats reach the broker and are accepted, one after another.
    const beats = () => proxy.exchanges.filter((e) => e.method === 'POST' && e.path === `/v1/tunnels/${tunnel!.id}/heartbeat` && e.status === 200);
    await eventually(() => beats().length >= 3, { timeoutMs: 30_000, what: 'three accepted heartbeats' });
    expect(agent.output()).toMatch(/status: online/);
    expect(agent.output()).not.toMatch(/Nothing is listening|error:/);

    expect(await agent.stop('SIGINT')).toBe(0);
    const after = await t.broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: t.broker.auth(userId) });
    expect(after.json()).toEqual({ tunnels: [] });
    expect(fake.isAlive(run!.pid)).toBe(false);
  });

  it('exits 1 with the message on a rejected token, and 2 on a usage error', async () => {
    const { env } = t.user('installed');
    const rejected = await runAgentToEnd(['list'], { ...env, TUNNEL_BROKER_TOKEN: 'nope' }, { entry: installed.bin });
    expect(rejected.code, rejected.output).toBe(1);
    expect(rejected.output).toContain('rejected the access token');
    const usage = await runAgentToEnd(['connect', 'http'], env, { entry: installed.bin });
    expect(usage.code).toBe(2);
    expect(usage.output).toContain('must be a port number from 1 to 65535');
  });
});
