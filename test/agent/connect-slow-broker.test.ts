import { describe, expect, it } from 'vitest';
import { exitCodeWithin, runAgent, startFlakyProxy, useAgentBroker } from '../helpers/agent.js';
import { eventually } from '../helpers/broker.js';

// Upstream calls may take many seconds here (the emulator is slowed on purpose), so the
// broker's own Cloudflare timeout is well above the injected latencies.
const t = useAgentBroker({ env: { CLOUDFLARE_TIMEOUT_MS: '20000' } });

/** Longer than the agent's request timeout below, so the agent sees its create still in progress. */
const SLOW_CREATE_MS = 6_000;
const REQUEST_TIMEOUT_SEC = '1';

/** The user's live tunnels, as GET /v1/tunnels lists them (rate limited per user: poll at 500 ms, not faster). */
async function liveTunnels(userId: string) {
  const res = await t.broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: t.broker.auth(userId) });
  expect(res.statusCode).toBe(200);
  return (res.json() as { tunnels: Array<{ id: string; hostname: string; status: string }> }).tunnels;
}

const rowsOf = (userId: string) => t.broker.app.prisma.tunnel.findMany({ where: { ownerId: userId } });

/** Cloudflare calls to `endpoint` take `ms` longer (the next `times` of them, else all) until the test ends. */
function slowDown(endpoint: 'tunnel.create' | 'tunnel.delete', ms: number, times?: number): void {
  t.defer(t.broker.emulator.injectFault({ kind: 'latency', endpoint, latencyMs: ms, ...(times ? { times } : {}) }));
}

function startAgent(env: Record<string, string>) {
  const agent = runAgent(['connect', '8080'], env);
  t.defer(() => agent.stop('SIGKILL'));
  return agent;
}

describe('agent connect against a broker slower than its requests', () => {
  it('keeps asking with the same Idempotency-Key while the create is in progress, and connects with the tunnel the broker made', async () => {
    const { userId, fake, env } = t.user();
    const proxy = await startFlakyProxy(t.url);
    t.defer(() => proxy.close());
    slowDown('tunnel.create', SLOW_CREATE_MS, 1);
    const agent = startAgent({ ...env, TUNNEL_BROKER_URL: proxy.url, TUNNEL_BROKER_REQUEST_TIMEOUT: REQUEST_TIMEOUT_SEC });

    await agent.waitFor(/status: starting \(.*create still in progress on the broker; waiting…\)/);
    await agent.waitFor(/Forwarding\s+https:\/\/[\s\S]*Tunnel\s+[0-9a-f-]{36}/);
    const shownId = /Tunnel\s+([0-9a-f-]{36})/.exec(agent.output())![1];
    await eventually(() => fake.runs().length === 1, { timeoutMs: 30_000, what: 'cloudflared to start' });

    // One create on the broker, found again by its key: exactly one live tunnel, the one the agent runs.
    const live = await liveTunnels(userId);
    expect(live.map((tunnel) => tunnel.id)).toEqual([shownId]);
    expect(await rowsOf(userId)).toHaveLength(1);
    const creates = proxy.exchanges.filter((e) => e.method === 'POST' && e.path === '/v1/tunnels');
    expect(new Set(creates.map((c) => c.headers['idempotency-key'])).size).toBe(1);
    expect(creates.some((c) => c.status === 409 && JSON.parse(c.body).code === 'IDEMPOTENCY_KEY_IN_USE')).toBe(true);
    expect(creates.at(-1)!.status).toBe(201);
    expect(JSON.parse(creates.at(-1)!.body).tunnelId).toBe(shownId);
    expect(agent.output()).not.toMatch(/error:/);

    expect(await agent.stop('SIGINT')).toBe(0);
    expect(await liveTunnels(userId)).toEqual([]);
  });

  it('on Ctrl-C while the create is in progress, finds the tunnel the broker then finishes and ends it', async () => {
    const { userId, fake, env } = t.user();
    slowDown('tunnel.create', SLOW_CREATE_MS, 1);
    const agent = startAgent({ ...env, TUNNEL_BROKER_REQUEST_TIMEOUT: REQUEST_TIMEOUT_SEC });
    await agent.waitFor(/create still in progress on the broker; waiting…/);
    // The broker is still in the slow upstream call: its row is `creating`.
    expect((await rowsOf(userId)).map((row) => row.status)).toEqual(['creating']);

    agent.child.kill('SIGINT');
    expect(await exitCodeWithin(agent, 30_000), agent.output()).toBe(0);
    const ended = /The broker had finished creating tunnel \S+ \(([0-9a-f-]{36})\); ended it\./.exec(agent.output());
    expect(ended, agent.output()).not.toBeNull();
    await eventually(async () => (await liveTunnels(userId)).length === 0, { timeoutMs: 15_000, intervalMs: 500, what: 'no live tunnel for the user' });
    const rows = await rowsOf(userId);
    expect(rows.map((row) => [row.id, row.status, row.endReason])).toEqual([[ended![1], 'ended', 'deleted']]);
    expect(fake.runs()).toEqual([]);
  });
});

describe('agent connect on Ctrl-C, when the broker is slow to end the tunnel', () => {
  /** An agent online with its tunnel, for a fresh user. */
  async function onlineAgent() {
    const { userId, fake, env } = t.user();
    const agent = startAgent(env);
    await agent.waitFor(/Forwarding\s+https:\/\//);
    await eventually(() => fake.runs().length === 1, { timeoutMs: 30_000, what: 'cloudflared to start' });
    const [tunnel] = await liveTunnels(userId);
    return { userId, agent, tunnel: tunnel! };
  }

  it('waits for the DELETE past the 5 s the agent used to allow, ends the tunnel and exits 0', async () => {
    const { userId, agent, tunnel } = await onlineAgent();
    // A teardown queued for the broker's Cloudflare budget answers this late too. Every teardown
    // is slow, so a DELETE retried after a timeout finds no quicker way through.
    slowDown('tunnel.delete', 8_000);
    agent.child.kill('SIGINT');
    expect(await exitCodeWithin(agent, 45_000)).toBe(0);
    expect(agent.output()).toContain(`Tunnel ${tunnel.hostname} ended.`);
    expect(agent.output()).not.toMatch(/could not end/);
    // One DELETE, answered once its slow teardown was done: not given up on and sent again.
    expect(t.broker.emulator.requests.filter((r) => r.endpoint === 'tunnel.delete' && r.fault === 'latency')).toHaveLength(1);
    expect(await liveTunnels(userId)).toEqual([]);
  });

  it('still quits at once with 130 on a second Ctrl-C during that wait', async () => {
    const { userId, agent, tunnel } = await onlineAgent();
    slowDown('tunnel.delete', 10_000);
    const before = t.broker.emulator.count('tunnel.delete');
    agent.child.kill('SIGINT');
    await eventually(() => t.broker.emulator.count('tunnel.delete') > before, { timeoutMs: 30_000, what: 'the broker to start the teardown' });
    agent.child.kill('SIGINT');
    // Well before the slowed teardown could answer.
    expect(await exitCodeWithin(agent, 6_000)).toBe(130);
    expect(agent.output()).toContain(`Forced exit: tunnel ${tunnel.hostname} is left to the broker`);
    // The broker finishes the teardown it started on its own.
    await eventually(async () => (await liveTunnels(userId)).length === 0, { timeoutMs: 30_000, intervalMs: 500, what: 'the broker to end the tunnel' });
  });
});
