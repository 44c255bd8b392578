import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { runAgentToEnd, startFlakyProxy, useAgentBroker } from '../helpers/agent.js';

const t = useAgentBroker();

async function create(userId: string, port: number, slug?: string) {
  const res = await t.broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: t.broker.auth(userId), payload: { port, ...(slug ? { requestedSlug: slug } : {}) } });
  expect(res.statusCode).toBe(201);
  return res.json() as { tunnelId: string; hostname: string; slug: string };
}

async function liveIds(userId: string) {
  const res = await t.broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: t.broker.auth(userId) });
  return (res.json() as { tunnels: Array<{ id: string }> }).tunnels.map((t) => t.id).sort();
}

describe('agent list', () => {
  it('shows your live tunnels with URL, port and status, and only yours', async () => {
    const { userId, env } = t.user();
    const a = await create(userId, 3000);
    const b = await create(userId, 8080);
    await create(`other-${randomUUID()}`, 9999);
    const result = await runAgentToEnd(['list'], env);
    expect(result.code, result.output).toBe(0);
    const lines = result.output.trim().split('\n');
    expect(lines[0]).toMatch(/^ID\s+URL\s+PORT\s+WHO CAN OPEN\s+STATUS$/);
    expect(lines).toHaveLength(3);
    expect(result.output).toMatch(new RegExp(`${a.tunnelId}\\s+https://${a.hostname.replace(/\./g, '\\.')}\\s+3000\\s+public\\s+active, expires in`));
    expect(result.output).toMatch(new RegExp(`${b.tunnelId}\\s+https://${b.hostname.replace(/\./g, '\\.')}\\s+8080\\s+public\\s+active`));
  });

  it('prints JSON with --json, and says so when there is nothing', async () => {
    const { userId, env } = t.user();
    const empty = await runAgentToEnd(['list'], env);
    expect(empty.code).toBe(0);
    expect(empty.output).toContain('No tunnels. Start one with: tunnel connect <port>');
    const a = await create(userId, 3000);
    const json = await runAgentToEnd(['list', '--json'], env);
    expect(json.code).toBe(0);
    const parsed = JSON.parse(json.output) as Array<{ id: string; hostname: string; port: number; status: string }>;
    expect(parsed).toEqual([expect.objectContaining({ id: a.tunnelId, hostname: a.hostname, port: 3000, status: 'active' })]);
  });

  it('shows only the tunnel named by its hostname, URL, slug or id, and fails for one that is not yours', async () => {
    const { userId, env } = t.user();
    const named = await create(userId, 3000, `list-${randomUUID().slice(0, 8)}`);
    await create(userId, 8080);
    for (const target of [named.hostname.toUpperCase(), `https://${named.hostname}/`, named.slug]) {
      const result = await runAgentToEnd(['list', target], env);
      expect(result.code, `${target}: ${result.output}`).toBe(0);
      const lines = result.output.trim().split('\n');
      expect(lines, target).toHaveLength(2);
      expect(lines[1], target).toMatch(new RegExp(`^${named.tunnelId}\\s+https://${named.hostname.replace(/\./g, '\\.')}\\s+3000\\s+public\\s+active`));
    }
    const json = await runAgentToEnd(['list', named.tunnelId, '--json'], env);
    expect(json.code, json.output).toBe(0);
    expect(JSON.parse(json.output)).toEqual([expect.objectContaining({ id: named.tunnelId, hostname: named.hostname, port: 3000, status: 'active' })]);

    const theirs = await create(`other-${randomUUID()}`, 9999);
    const other = await runAgentToEnd(['list', theirs.hostname], env);
    expect(other.code).toBe(1);
    expect(other.output).toContain(`none of your live tunnels is "${theirs.hostname}"`);
  });

  it('fails with how to get a token on 401', async () => {
    const { env } = t.user();
    const result = await runAgentToEnd(['list', '--token', 'nope'], env);
    expect(result.code).toBe(1);
    expect(result.output).toContain('rejected the access token (from --token)');
    expect(result.output).toContain('npm run token -- <user>');
  });
});

describe('agent stop', () => {
  it('ends a tunnel named by its hostname, its URL, its slug or its id', async () => {
    const { userId, env } = t.user();
    const byHost = await create(userId, 3001);
    const byUrl = await create(userId, 3002);
    const bySlug = await create(userId, 3003, `stop-${randomUUID().slice(0, 8)}`);
    const byId = await create(userId, 3004);
    const keep = await create(userId, 3005);

    for (const [target, tunnel] of [
      [byHost.hostname, byHost],
      [`https://${byUrl.hostname}/`, byUrl],
      [bySlug.slug, bySlug],
      [byId.tunnelId.toUpperCase(), byId],
    ] as const) {
      const result = await runAgentToEnd(['stop', target], env);
      expect(result.code, result.output).toBe(0);
      expect(result.output).toContain('Ended ');
      expect(await liveIds(userId)).not.toContain(tunnel.tunnelId);
    }
    expect(await liveIds(userId)).toEqual([keep.tunnelId]);
    expect((await t.broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: byHost.tunnelId } })).status).toBe('ended');
  });

  it('names the tunnel to the broker in its one DELETE (a URL as its hostname): no list first', async () => {
    const { userId, env } = t.user();
    const proxy = await startFlakyProxy(t.url);
    t.defer(() => proxy.close());
    const byUrl = await create(userId, 3001);
    const bySlug = await create(userId, 3002, `one-${randomUUID().slice(0, 8)}`);
    for (const [target, sent] of [[`HTTPS://${byUrl.hostname.toUpperCase()}./path`, byUrl.hostname], [bySlug.slug, bySlug.slug]] as const) {
      proxy.exchanges.length = 0;
      const result = await runAgentToEnd(['stop', target], { ...env, TUNNEL_BROKER_URL: proxy.url });
      expect(result.code, result.output).toBe(0);
      expect(result.output).toContain(`Ended ${sent}.`);
      expect(proxy.exchanges.map((e) => `${e.method} ${e.path} ${e.status}`)).toEqual([`DELETE /v1/tunnels/${sent} 204`]);
    }
    expect(await liveIds(userId)).toEqual([]);
  });

  it('refuses an empty name as a usage error (2), before talking to the broker', async () => {
    const { env } = t.user();
    const result = await runAgentToEnd(['stop', '  '], { ...env, TUNNEL_BROKER_URL: 'http://127.0.0.1:9' });
    expect(result.code, result.output).toBe(2);
    expect(result.output).toContain('name a tunnel by its id, hostname, https:// URL or slug');
  });

  it("fails for a tunnel that is not one of yours, and leaves someone else's alone", async () => {
    const { env } = t.user();
    const otherUser = `other-${randomUUID()}`;
    const theirs = await create(otherUser, 3000);
    const byId = await runAgentToEnd(['stop', theirs.tunnelId], env);
    expect(byId.code).toBe(1);
    expect(byId.output).toContain(`none of your tunnels has the id ${theirs.tunnelId}`);
    const byHost = await runAgentToEnd(['stop', theirs.hostname], env);
    expect(byHost.code).toBe(1);
    expect(byHost.output).toContain(`none of your live tunnels is "${theirs.hostname}"`);
    const bySlug = await runAgentToEnd(['stop', theirs.slug], env);
    expect(bySlug.code).toBe(1);
    expect(bySlug.output).toContain(`none of your live tunnels is "${theirs.slug}"`);
    expect(await liveIds(otherUser)).toEqual([theirs.tunnelId]);
  });
});
