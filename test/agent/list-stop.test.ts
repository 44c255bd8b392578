import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { runAgentToEnd, useAgentBroker } from '../helpers/agent.js';

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
    expect(lines[0]).toMatch(/^ID\s+URL\s+PORT\s+STATUS$/);
    expect(lines).toHaveLength(3);
    expect(result.output).toMatch(new RegExp(`${a.tunnelId}\\s+https://${a.hostname.replace(/\./g, '\\.')}\\s+3000\\s+active, expires in`));
    expect(result.output).toMatch(new RegExp(`${b.tunnelId}\\s+https://${b.hostname.replace(/\./g, '\\.')}\\s+8080\\s+active`));
  });

  it('prints JSON with --json, and says so when there is nothing', async () => {
    const { userId, env } = t.user();
    const empty = await runAgentToEnd(['list'], env);
    expect(empty.code).toBe(0);
    expect(empty.output).toContain('No tunnels. Start one with: tunnel-broker connect <port>');
    const a = await create(userId, 3000);
    const json = await runAgentToEnd(['list', '--json'], env);
    expect(json.code).toBe(0);
    const parsed = JSON.parse(json.output) as Array<{ id: string; hostname: string; port: number; status: string }>;
    expect(parsed).toEqual([expect.objectContaining({ id: a.tunnelId, hostname: a.hostname, port: 3000, status: 'active' })]);
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
    expect(await liveIds(otherUser)).toEqual([theirs.tunnelId]);
  });
});
