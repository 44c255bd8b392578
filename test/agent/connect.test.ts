import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { exitCodeWithin, runAgent, startFlakyProxy, startListeningBroker, tempHome, tunnelIdInToken, writeFakeCloudflared, type FakeCloudflared } from '../helpers/agent.js';
import { eventually, type TestBroker } from '../helpers/broker.js';
import type { RunningProcess } from '../helpers/process.js';
import { heartbeatKeysOf } from '../../src/tunnels/heartbeat-keys.js';

// A 2 s TTL and 1 s heartbeats: "alive past several TTLs" takes seconds, not minutes.
let broker: TestBroker;
let url: string;
let app: Server;
let appPort: number;
beforeAll(async () => {
  ({ broker, url } = await startListeningBroker({ env: { TUNNEL_TTL_SECONDS: '2', HEARTBEAT_INTERVAL_SECONDS: '1' } }));
  // Something listening, so these tests see no "nothing is listening" warning.
  app = createServer((socket) => socket.end());
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  appPort = (app.address() as { port: number }).port;
});
afterAll(async () => {
  await new Promise<void>((resolve) => app?.close(() => resolve()));
  await broker?.close();
});

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Listed {
  id: string;
  hostname: string;
  slug: string;
  status: string;
}

async function liveTunnels(userId: string, on: TestBroker = broker): Promise<Listed[]> {
  const res = await on.app.inject({ method: 'GET', url: '/v1/tunnels', headers: broker.auth(userId) });
  expect(res.statusCode).toBe(200);
  return (res.json() as { tunnels: Listed[] }).tunnels;
}

const row = (id: string) => broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id } });

/** An agent for a fresh user, with its own fake cloudflared and home directory. */
function startAgent(args: string[], options: { fake?: FakeCloudflared; server?: string } = {}) {
  const userId = `agent-${randomUUID()}`;
  const fake = options.fake ?? writeFakeCloudflared();
  const home = tempHome();
  const env = { ...home.env, TUNNEL_BROKER_URL: options.server ?? url, TUNNEL_BROKER_TOKEN: broker.token(userId, 3600), CLOUDFLARED_PATH: fake.path };
  const agent = runAgent(['connect', String(appPort), ...args], env);
  cleanups.push(() => home.remove(), () => fake.remove(), () => agent.stop('SIGKILL'));
  return { userId, fake, agent };
}

/** Waits until the agent has created its tunnel and cloudflared runs; returns both. */
async function online(agent: RunningProcess, fake: FakeCloudflared, userId: string, on: TestBroker = broker) {
  await agent.waitFor(/Forwarding\s+https:\/\//);
  const [tunnel] = await eventually(async () => {
    const live = await liveTunnels(userId, on);
    return live.length === 1 && live[0]!.status === 'active' ? live : undefined;
  }, { timeoutMs: 30_000, intervalMs: 500, what: 'the tunnel to be active' });
  const [run] = await eventually(() => (fake.runs().length > 0 ? fake.runs() : undefined), { timeoutMs: 30_000, what: 'cloudflared to start' });
  return { tunnel: tunnel!, run: run! };
}

/** Makes the tunnel due and sweeps until the reaper has ended it (a heartbeat can land in between and push the deadline back). */
async function reap(tunnelId: string) {
  await eventually(async () => {
    await broker.redis.zadd(heartbeatKeysOf(tunnelId).deadlines, 0, tunnelId);
    await broker.app.reaper!.sweep();
    return (await row(tunnelId)).status === 'ended';
  }, { timeoutMs: 30_000, what: `tunnel ${tunnelId} to be reaped` });
}

describe('agent connect', () => {
  it('prints the public URL and hands cloudflared the tunnel token in its environment, never on its command line', async () => {
    const { userId, fake, agent } = startAgent([]);
    const { tunnel, run } = await online(agent, fake, userId);

    expect(agent.output()).toContain(`https://${tunnel.hostname}`);
    expect(agent.output()).toMatch(new RegExp(`Forwarding\\s+https://${tunnel.hostname.replace(/\./g, '\\.')}\\s+->\\s+http://localhost:${appPort}`));
    expect(run.argv).toEqual(['tunnel', '--no-autoupdate', 'run']);
    expect(run.token).toBeTruthy();
    expect(run.argv.join(' ')).not.toContain(run.token!);
    // The token is this tunnel's connector token, and the user's broker credential stayed with the agent.
    expect(tunnelIdInToken(run.token!)).toBe((await row(tunnel.id)).cfTunnelId);
    expect(run.brokerToken).toBeNull();
    // cloudflared's own output only with --verbose; no warning when the port is served.
    expect(agent.output()).not.toContain('fake cloudflared');
    expect(agent.output()).not.toMatch(/Nothing is listening/);
    expect(await agent.stop('SIGINT')).toBe(0);
  });

  it("shows cloudflared's output with --verbose", async () => {
    const { userId, fake, agent } = startAgent(['--verbose']);
    await online(agent, fake, userId);
    await agent.waitFor(/cloudflared │ .*Starting tunnel \(fake cloudflared \d+\)/);
    await agent.waitFor(/heartbeat ok/);
    expect(await agent.stop('SIGINT')).toBe(0);
  });

  it('keeps the tunnel alive past several TTLs by heartbeating, while the reaper sweeps', async () => {
    const { userId, fake, agent } = startAgent([]);
    const { tunnel } = await online(agent, fake, userId);
    const until = Date.now() + 7_000; // three and a half TTLs
    for (let i = 0; i < 100 && Date.now() < until; i++) {
      await broker.app.reaper!.sweep();
      await new Promise((r) => setTimeout(r, 250));
    }
    expect((await row(tunnel.id)).status).toBe('active');
    expect((await liveTunnels(userId)).map((t) => t.id)).toEqual([tunnel.id]);
    expect(fake.runs()).toHaveLength(1);
    expect(agent.output()).not.toMatch(/no longer has/);
    expect(agent.output()).toMatch(/status: online/);
    expect(await agent.stop('SIGINT')).toBe(0);
  });

  it('restarts cloudflared with the same token when it is killed', async () => {
    const { userId, fake, agent } = startAgent([]);
    const { tunnel, run } = await online(agent, fake, userId);
    process.kill(run.pid, 'SIGKILL');
    const second = await eventually(() => fake.runs()[1], { timeoutMs: 30_000, what: 'cloudflared to be restarted' });
    expect(second.pid).not.toBe(run.pid);
    expect(second.token).toBe(run.token);
    await agent.waitFor(/cloudflared was killed by SIGKILL.*restarting in/);
    await agent.waitFor(/status: online \(reconnects 1/);
    expect((await liveTunnels(userId)).map((t) => t.id)).toEqual([tunnel.id]);
    expect(await agent.stop('SIGINT')).toBe(0);
  });

  it('ends the tunnel and exits non-zero when cloudflared keeps dying', async () => {
    const fake = writeFakeCloudflared();
    fake.crashOnStart(true);
    const { userId, agent } = startAgent([], { fake });
    await agent.waitFor(/Forwarding\s+https:\/\//);
    const [tunnel] = await liveTunnels(userId);
    const code = await exitCodeWithin(agent, 60_000);
    expect(code).toBe(1);
    expect(agent.output()).toMatch(/cloudflared keeps exiting \(5 times/);
    expect(agent.output()).toMatch(/fake cloudflared told to crash/);
    expect(agent.output()).toMatch(/Tunnel .* ended\./);
    expect(fake.runs()).toHaveLength(5);
    expect((await row(tunnel!.id)).status).toBe('ended');
    expect(await liveTunnels(userId)).toEqual([]);
  });

  it('recreates a reaped tunnel with the same slug, says so, and restarts cloudflared with the new token', async () => {
    const slug = `keep-${randomUUID().slice(0, 8)}`;
    const { userId, fake, agent } = startAgent(['--slug', slug]);
    const { tunnel: first, run } = await online(agent, fake, userId);
    expect(first.slug).toBe(slug);

    await reap(first.id);
    await agent.waitFor(/no longer has tunnel/);
    await agent.waitFor(/Created a new tunnel .* at the same URL: https:\/\//);
    const [second] = await eventually(async () => {
      const live = await liveTunnels(userId);
      return live.length === 1 && live[0]!.id !== first.id && live[0]!.status === 'active' ? live : undefined;
    }, { timeoutMs: 30_000, intervalMs: 500, what: 'the new tunnel' });
    expect(second!.slug).toBe(slug);
    expect(second!.hostname).toBe(first.hostname);

    const restarted = await eventually(() => fake.runs()[1], { timeoutMs: 30_000, what: 'cloudflared to restart with the new token' });
    expect(tunnelIdInToken(restarted.token!)).toBe((await row(second!.id)).cfTunnelId);
    expect(restarted.token).not.toBe(run.token);
    // The old cloudflared was stopped, not left running next to the new one.
    expect(fake.signals()).toContainEqual({ pid: run.pid, signal: 'SIGTERM' });
    await eventually(() => !fake.isAlive(run.pid), { timeoutMs: 30_000, what: 'the old cloudflared to exit' });

    expect(await agent.stop('SIGINT')).toBe(0);
    expect((await row(second!.id)).status).toBe('ended');
  });

  it('recreates a tunnel ended with DELETE, and says the URL changed when no slug was asked for', async () => {
    const { userId, fake, agent } = startAgent([]);
    const { tunnel: first } = await online(agent, fake, userId);
    const res = await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${first.id}`, headers: broker.auth(userId) });
    expect(res.statusCode).toBe(204);
    await agent.waitFor(/NEW URL: https:\/\/\S+ +\(was https:\/\//);
    const live = await eventually(async () => {
      const tunnels = await liveTunnels(userId);
      return tunnels.length === 1 && tunnels[0]!.id !== first.id ? tunnels : undefined;
    }, { timeoutMs: 30_000, intervalMs: 500, what: 'the new tunnel' });
    expect(agent.output()).toContain(`https://${live[0]!.hostname}`);
    await eventually(() => fake.runs().length === 2, { timeoutMs: 30_000, what: 'cloudflared to restart' });
    expect(await agent.stop('SIGINT')).toBe(0);
  });

  it('retries a create whose answer was lost with the same Idempotency-Key, and so makes one tunnel, not two', async () => {
    const proxy = await startFlakyProxy(url);
    cleanups.push(() => proxy.close());
    proxy.dropCreateAnswers = 1;
    const { userId, fake, agent } = startAgent([], { server: proxy.url });
    const { tunnel } = await online(agent, fake, userId);
    const creates = proxy.exchanges.filter((e) => e.method === 'POST' && e.path === '/v1/tunnels');
    expect(creates.map((c) => c.status)).toEqual(['dropped', 201]);
    const [lost, retried] = creates;
    expect(lost!.headers['idempotency-key']).toMatch(/^[0-9a-f-]{36}$/);
    expect(retried!.headers['idempotency-key']).toBe(lost!.headers['idempotency-key']);
    // The broker made the tunnel the first time; the retry got it back.
    expect(JSON.parse(retried!.body).tunnelId).toBe(JSON.parse(lost!.body).tunnelId);
    expect((await liveTunnels(userId)).map((t) => t.id)).toEqual([tunnel.id]);
    expect(agent.output()).toMatch(/Creating the tunnel failed .*retrying/);
    expect(await agent.stop('SIGINT')).toBe(0);
  });

  it("heartbeats with the tunnel's heartbeat token, and rides out failed heartbeats with retries", async () => {
    // Room for two failures spaced by Retry-After: 1 s inside the TTL (at 2 s, the tunnel would lapse and be recreated).
    const roomy = await startListeningBroker({ env: { TUNNEL_TTL_SECONDS: '6', HEARTBEAT_INTERVAL_SECONDS: '1' } });
    cleanups.push(() => roomy.broker.close());
    const proxy = await startFlakyProxy(roomy.url);
    cleanups.push(() => proxy.close());
    const { userId, fake, agent } = startAgent([], { server: proxy.url });
    const { tunnel } = await online(agent, fake, userId, roomy.broker);
    const create = proxy.exchanges.find((e) => e.method === 'POST' && e.path === '/v1/tunnels')!;
    const { heartbeatToken } = JSON.parse(create.body) as { heartbeatToken?: string };
    const beats = () => proxy.exchanges.filter((e) => e.path === `/v1/tunnels/${tunnel.id}/heartbeat`);
    await eventually(() => beats().some((b) => b.status === 200), { timeoutMs: 30_000, what: 'a heartbeat' });
    expect(heartbeatToken).toBeTruthy();
    expect(beats().every((b) => b.headers.authorization === `Bearer ${heartbeatToken}`)).toBe(true);
    expect(create.headers.authorization).not.toBe(`Bearer ${heartbeatToken}`);

    proxy.failHeartbeats = 2;
    await agent.waitFor(/Heartbeat failed \(proxy says: try again\); retrying with backoff/);
    await agent.waitFor(/status: reconnecting .*broker answered 503 SERVICE_UNAVAILABLE, retrying/);
    await agent.waitFor(/Heartbeats are getting through again \(after 2 failed attempts\)/);
    // The retries were spaced by Retry-After (1 s), not fired back to back.
    const failed = beats().filter((b) => b.status === 503);
    expect(failed).toHaveLength(2);
    expect(failed[1]!.at - failed[0]!.at).toBeGreaterThanOrEqual(900);
    expect((await liveTunnels(userId, roomy.broker)).map((t) => t.id)).toEqual([tunnel.id]);
    expect(agent.output()).not.toMatch(/no longer has/);
    expect(await agent.stop('SIGINT')).toBe(0);
  });

  it('switches to the renewed heartbeat token a heartbeat answer hands out', async () => {
    // Heartbeat tokens due for renewal from the start: every heartbeat answer carries a new one.
    const renewing = await startListeningBroker({
      env: { TUNNEL_TTL_SECONDS: '6', HEARTBEAT_INTERVAL_SECONDS: '1' },
      heartbeatTokens: { ttlSeconds: 3600, renewBeforeSeconds: 3600 },
    });
    cleanups.push(() => renewing.broker.close());
    const proxy = await startFlakyProxy(renewing.url);
    cleanups.push(() => proxy.close());
    const { userId, fake, agent } = startAgent([], { server: proxy.url });
    const { tunnel } = await online(agent, fake, userId, renewing.broker);
    const original = (JSON.parse(proxy.exchanges.find((e) => e.method === 'POST' && e.path === '/v1/tunnels')!.body) as { heartbeatToken: string }).heartbeatToken;
    const beats = () => proxy.exchanges.filter((e) => e.path === `/v1/tunnels/${tunnel.id}/heartbeat`);
    // Tokens carry their issue time in seconds: a renewal a second or more later is a new token.
    await eventually(() => beats().some((b) => b.status === 200 && b.headers.authorization !== `Bearer ${original}`), { timeoutMs: 30_000, what: 'a heartbeat with a renewed token' });

    // Each heartbeat used the create's token or one an earlier heartbeat answer handed out.
    const handedOut = new Set([original]);
    for (const beat of beats()) {
      expect(beat.status).toBe(200);
      expect(handedOut.has(String(beat.headers.authorization).replace(/^Bearer /, ''))).toBe(true);
      const renewed = (JSON.parse(beat.body) as { heartbeatToken?: string }).heartbeatToken;
      expect(renewed).toEqual(expect.any(String));
      handedOut.add(renewed!);
    }
    expect(agent.output()).not.toContain(original);
    expect(await agent.stop('SIGINT')).toBe(0);
  });

  it('on Ctrl-C stops cloudflared, ends the tunnel and exits 0 within a few seconds', async () => {
    const { userId, fake, agent } = startAgent([]);
    const { tunnel, run } = await online(agent, fake, userId);
    const started = Date.now();
    agent.child.kill('SIGINT');
    const code = await exitCodeWithin(agent, 10_000);
    expect(code).toBe(0);
    // About a second on an idle machine; the bound leaves room for a loaded CI runner.
    expect(Date.now() - started).toBeLessThan(8_000);
    expect(fake.signals()).toContainEqual({ pid: run.pid, signal: 'SIGTERM' });
    expect(fake.isAlive(run.pid)).toBe(false);
    expect((await row(tunnel.id)).status).toBe('ended');
    expect(await liveTunnels(userId)).toEqual([]);
    expect(agent.output()).toMatch(new RegExp(`Tunnel ${tunnel.hostname.replace(/\./g, '\\.')} ended\\.`));
  });

  it('on a second Ctrl-C quits at once with 130, kills cloudflared, and leaves the tunnel to the reaper', async () => {
    const fake = writeFakeCloudflared();
    fake.ignoreSigterm(true);
    const { userId, agent } = startAgent([], { fake });
    const { tunnel, run } = await online(agent, fake, userId);
    agent.child.kill('SIGINT');
    await eventually(() => fake.signals().some((s) => s.pid === run.pid && s.signal === 'SIGTERM'), { timeoutMs: 30_000, what: 'cloudflared to get SIGTERM' });
    const started = Date.now();
    agent.child.kill('SIGINT');
    const code = await exitCodeWithin(agent, 10_000);
    expect(code).toBe(130);
    expect(Date.now() - started).toBeLessThan(10_000);
    await eventually(() => !fake.isAlive(run.pid), { timeoutMs: 30_000, what: 'cloudflared to be killed' });
    expect(agent.output()).toContain(`Forced exit: tunnel ${tunnel.hostname} is left to the broker`);
    expect((await liveTunnels(userId)).map((t) => t.id)).toEqual([tunnel.id]);
  });

  it('on SIGTERM kills a cloudflared that ignores SIGTERM, still ends the tunnel and exits 0', async () => {
    const fake = writeFakeCloudflared();
    fake.ignoreSigterm(true);
    const { userId, agent } = startAgent([], { fake });
    const { tunnel, run } = await online(agent, fake, userId);
    const started = Date.now();
    agent.child.kill('SIGTERM');
    const code = await exitCodeWithin(agent, 15_000);
    expect(code).toBe(0);
    // cloudflared gets 3 s to stop before SIGKILL.
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(fake.isAlive(run.pid)).toBe(false);
    expect((await row(tunnel.id)).status).toBe('ended');
  });
});
