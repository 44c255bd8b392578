import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSigner } from 'fast-jwt';
import { describe, expect, it } from 'vitest';
import { runAgent, runAgentToEnd, startFlakyProxy, useAgentBroker } from '../helpers/agent.js';
import { eventually, TEST_JWT_SECRET } from '../helpers/broker.js';
import { freePort } from '../helpers/process.js';

// Two live tunnels and three creates a minute per user, so the limits are quick to reach.
const t = useAgentBroker({ env: { MAX_TUNNELS_PER_USER: '2', CREATE_RATE_LIMIT_PER_MINUTE: '3' } });

async function liveTunnels(userId: string) {
  const res = await t.broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: t.broker.auth(userId) });
  return (res.json() as { tunnels: Array<{ id: string; slug: string }> }).tunnels;
}

async function createVia(userId: string, body: Record<string, unknown>) {
  return t.broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: t.broker.auth(userId), payload: body });
}

/**
 * Fails fast: exit 1 after exactly one create (no retries), seen by a proxy in front of the
 * broker; counting requests, unlike a stopwatch, holds on a loaded machine.
 */
async function failsFast(args: string[], env: Record<string, string>, options: { creates?: number } = {}) {
  const proxy = await startFlakyProxy(t.url);
  t.defer(() => proxy.close());
  const result = await runAgentToEnd(args, { ...env, TUNNEL_BROKER_URL: proxy.url });
  expect(result.code, result.output).toBe(1);
  const creates = proxy.exchanges.filter((e) => e.method === 'POST' && e.path === '/v1/tunnels');
  expect(creates, result.output).toHaveLength(options.creates ?? 1);
  return result.output;
}

describe('agent connect fails fast, says why and what to do, and leaves nothing behind', () => {
  it('on a token the broker rejects (401)', async () => {
    const { userId, fake, env } = t.user();
    const output = await failsFast(['connect', '8080'], { ...env, TUNNEL_BROKER_TOKEN: 'not.a.jwt' });
    expect(output).toMatch(/rejected the access token \(from TUNNEL_BROKER_TOKEN\)/);
    expect(output).toContain('npm run token -- <user>');
    expect(output).toContain('tunnel-broker token create');
    expect(fake.runs()).toEqual([]);
    expect(await liveTunnels(userId)).toEqual([]);
  });

  it('on an expired token, saying when it expired', async () => {
    const { fake, env } = t.user();
    const hourAgo = Date.now() - 3_600_000;
    const expired = createSigner({ key: TEST_JWT_SECRET, algorithm: 'HS256', expiresIn: 60_000, clockTimestamp: hourAgo })({ sub: 'someone' });
    const output = await failsFast(['connect', '8080', '--token', expired], env);
    expect(output).toMatch(/The access token \(from --token\) expired at \d{4}-/);
    expect(output).toContain('npm run token -- <user>');
    expect(fake.runs()).toEqual([]);
  });

  it("on a slug someone else's tunnel holds (409)", async () => {
    const { userId, fake, env } = t.user();
    const slug = `taken-${randomUUID().slice(0, 8)}`;
    expect((await createVia(`other-${randomUUID()}`, { port: 1234, requestedSlug: slug })).statusCode).toBe(201);
    const output = await failsFast(['connect', '8080', '--slug', slug], env);
    expect(output).toContain(`The slug "${slug}" is taken. Pick another --slug, or leave it out for a random one.`);
    expect(fake.runs()).toEqual([]);
    expect(await liveTunnels(userId)).toEqual([]);
  });

  it('on a slug one of your own tunnels holds, naming it and how to stop it', async () => {
    const { userId, env } = t.user();
    const slug = `mine-${randomUUID().slice(0, 8)}`;
    expect((await createVia(userId, { port: 1234, requestedSlug: slug })).statusCode).toBe(201);
    const output = await failsFast(['connect', '8080', '--slug', slug], env);
    expect(output).toContain(`is in use by your own tunnel ${slug}.tunnels.test`);
    expect(output).toContain(`tunnel stop ${slug}.tunnels.test`);
  });

  it('on the live-tunnel limit (429), pointing at list and stop', async () => {
    const { userId, fake, env } = t.user();
    for (let i = 0; i < 2; i++) expect((await createVia(userId, { port: 1000 + i })).statusCode).toBe(201);
    const output = await failsFast(['connect', '8080'], env);
    expect(output).toMatch(/maximum number of live tunnels/);
    expect(output).toContain('tunnel list');
    expect(fake.runs()).toEqual([]);
    expect(await liveTunnels(userId)).toHaveLength(2);
  });

  it('on the create rate limit (429), saying how long to wait', async () => {
    const { userId, fake, env } = t.user();
    // Three attempts use up the minute's budget (the third is refused by the live-tunnel limit, and still counts).
    for (let i = 0; i < 3; i++) await createVia(userId, { port: 1000 + i });
    const output = await failsFast(['connect', '8080'], env);
    expect(output).toMatch(/rate-limiting your tunnel creations\. Wait (\d+ s|1 min) and try again/);
    expect(fake.runs()).toEqual([]);
  });

  it('when cloudflared is not on PATH, saying how to install it, before creating anything', async () => {
    const { userId, env } = t.user();
    const emptyDir = mkdtempSync(join(tmpdir(), 'empty-path-'));
    t.defer(() => rmSync(emptyDir, { recursive: true, force: true }));
    const { CLOUDFLARED_PATH: _, ...withoutPath } = env;
    const output = await failsFast(['connect', '8080'], { ...withoutPath, PATH: emptyDir }, { creates: 0 });
    expect(output).toContain('cloudflared was not found on PATH');
    expect(output).toContain('brew install cloudflared');
    expect(output).toContain('--cloudflared');
    expect(await liveTunnels(userId)).toEqual([]);
  });

  it('when --cloudflared points at nothing', async () => {
    const { env } = t.user();
    const output = await failsFast(['connect', '8080', '--cloudflared', '/nonexistent/cloudflared'], env, { creates: 0 });
    expect(output).toContain('--cloudflared points at /nonexistent/cloudflared, which is not an executable file');
  });

  it('when the broker cannot be reached, after a few quick retries', async () => {
    const { fake, env } = t.user();
    const started = Date.now();
    const { code, output } = await runAgentToEnd(['connect', '8080'], { ...env, TUNNEL_BROKER_URL: `http://127.0.0.1:${await freePort()}` });
    expect(code).toBe(1);
    // Four attempts with at most 3.5 s of backoff between them; the rest is starting node.
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(output.match(/Creating the tunnel failed/g)).toHaveLength(3);
    expect(output).toMatch(/Cannot reach the broker at http:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/);
    expect(output).toMatch(/Is the broker running/);
    expect(fake.runs()).toEqual([]);
  });

  it('rejects a port that is not a port before talking to anyone, as a usage error (2)', async () => {
    const { env } = t.user();
    const { code, output } = await runAgentToEnd(['connect', '70000'], env);
    expect(code).toBe(2);
    expect(output).toMatch(/must be a port number from 1 to 65535/);
  });
});

describe('agent connect warns but carries on', () => {
  it('when nothing listens on the local port yet', async () => {
    const { userId, fake, env } = t.user();
    const port = await freePort();
    const agent = runAgent(['connect', String(port)], env);
    t.defer(() => agent.stop('SIGKILL'));
    await agent.waitFor(new RegExp(`warning: Nothing is listening on localhost:${port} yet`));
    await agent.waitFor(/Forwarding\s+https:\/\//);
    await agent.waitFor(/status: online/);
    await eventually(() => fake.runs().length === 1, { timeoutMs: 30_000, what: 'cloudflared to start' });
    expect(await liveTunnels(userId)).toHaveLength(1);
    expect(await agent.stop('SIGINT')).toBe(0);
    expect(await liveTunnels(userId)).toEqual([]);
  });
});
