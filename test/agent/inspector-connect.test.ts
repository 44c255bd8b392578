import { createServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent, runAgentToEnd, useAgentBroker } from '../helpers/agent.js';
import { eventually } from '../helpers/broker.js';

// `tunnel connect` with its inspector, against a real broker and a fake cloudflared: the
// tunnel is created for the recording proxy's port, and what reaches that port (as cloudflared
// would send it) reaches the app and the inspector.
const t = useAgentBroker({ env: { TUNNEL_TTL_SECONDS: '30', HEARTBEAT_INTERVAL_SECONDS: '1' } });

let app: Server;
let appPort: number;
beforeAll(async () => {
  app = createServer((req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(`app saw ${req.method} ${req.url}`));
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  appPort = (app.address() as { port: number }).port;
});
afterAll(async () => {
  await new Promise<void>((resolve) => {
    app.close(() => resolve());
    app.closeAllConnections();
  });
});

async function tunnelOf(userId: string): Promise<{ id: string; hostname: string; port: number }> {
  return eventually(async () => {
    const res = await t.broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: t.broker.auth(userId) });
    return (res.json() as { tunnels: Array<{ id: string; hostname: string; port: number }> }).tunnels[0];
  }, { timeoutMs: 30_000, intervalMs: 500, what: 'the tunnel' });
}

describe('tunnel connect with the inspector', () => {
  it('prints the inspector URL beside the public URL (the next free port when the asked one is taken), creates the tunnel for its proxy, and records what reaches the app', async () => {
    const blocker = createNetServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    t.defer(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const taken = (blocker.address() as { port: number }).port;
    const { userId, env } = t.user('inspect');
    const agent = runAgent(['connect', String(appPort), '--inspect-port', String(taken), '--inspect-keep', '20', '--inspect-body-limit', '8k', '--inspect-memory', '2MiB'], env);
    t.defer(() => agent.stop('SIGKILL'));

    await agent.waitFor(/Inspector\s+http:\/\/127\.0\.0\.1:\d+/);
    const inspectorUrl = /Inspector\s+(http:\/\/127\.0\.0\.1:\d+)/.exec(agent.output())![1]!;
    const port = Number(new URL(inspectorUrl).port);
    expect(port).toBeGreaterThan(taken);
    expect(agent.output()).toContain(`Port ${taken} is taken; the inspector is on port ${port} instead.`);
    // The URL, who can open it (issue 12), then the inspector.
    expect(agent.output()).toMatch(new RegExp(`Forwarding\\s+https://\\S+\\s+->\\s+http://localhost:${appPort}\\n\\s+Who can open [^\\n]+\\n\\s+Inspector\\s+${inspectorUrl}`));

    const tunnel = await tunnelOf(userId);
    expect(tunnel.port).not.toBe(appPort);
    const visit = await fetch(`http://localhost:${tunnel.port}/from/the/edge?x=1`, { headers: { host: tunnel.hostname, 'x-forwarded-proto': 'https' } });
    expect(await visit.text()).toBe('app saw GET /from/the/edge?x=1');
    const listed = (await (await fetch(`${inspectorUrl}/api/requests`)).json()) as { requests: Array<{ method: string; path: string; status: number }>; limits: unknown };
    expect(listed.requests).toMatchObject([{ method: 'GET', path: '/from/the/edge?x=1', status: 200 }]);
    expect(listed.limits).toEqual({ maxExchanges: 20, bodyCapBytes: 8 * 1024, memoryCapBytes: 2 * 1024 * 1024 });

    expect(await agent.stop('SIGINT')).toBe(0);
    await expect(fetch(`${inspectorUrl}/api/requests`)).rejects.toThrow();
  });

  it('refuses malformed inspector flags as usage errors (exit 2)', async () => {
    const { env } = t.user('inspect');
    for (const [flag, value, message] of [
      ['--inspect-body-limit', 'lots', 'must be a size in bytes'],
      ['--inspect-keep', '0', 'must be a whole number from 1'],
      ['--inspect-port', '70000', 'must be a port number from 0'],
    ] as const) {
      const run = await runAgentToEnd(['connect', String(appPort), flag, value], env);
      expect(run.code, run.output).toBe(2);
      expect(run.output).toContain(message);
    }
  });

  it('--no-inspect creates the tunnel straight for the app port and starts no inspector', async () => {
    const { userId, env } = t.user('inspect');
    const agent = runAgent(['connect', String(appPort), '--no-inspect'], env);
    t.defer(() => agent.stop('SIGKILL'));
    await agent.waitFor(/Forwarding\s+https:\/\//);
    expect((await tunnelOf(userId)).port).toBe(appPort);
    expect(agent.output()).not.toContain('Inspector');
    expect(await agent.stop('SIGINT')).toBe(0);
  });
});
