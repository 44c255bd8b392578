import { describe, expect, it } from 'vitest';
import { runAgent, runAgentToEnd, useAgentBroker } from '../helpers/agent.js';

const t = useAgentBroker({ env: { ACCESS_TEAM_EMAIL_DOMAINS: 'team.example' } });

async function create(userId: string, access?: unknown) {
  const res = await t.broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: t.broker.auth(userId), payload: { port: 3000, ...(access ? { access } : {}) } });
  expect(res.statusCode).toBe(201);
  return res.json() as { tunnelId: string; hostname: string; slug: string };
}

describe('agent and Cloudflare Access', () => {
  it('connect --allow makes an emails tunnel and prints who can open the URL next to it', async () => {
    const { userId, env } = t.user();
    const agent = runAgent(['connect', '3000', '--allow', 'a@x.example,b@y.example'], env);
    t.defer(() => agent.stop('SIGKILL'));
    await agent.waitFor(/Who can open only a@x\.example, b@y\.example/);
    const res = await t.broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: t.broker.auth(userId) });
    const [tunnel] = (res.json() as { tunnels: Array<{ hostname: string; access: unknown }> }).tunnels;
    expect(tunnel!.access).toEqual({ mode: 'emails', emails: ['a@x.example', 'b@y.example'] });
    expect(t.broker.emulator.canOpen(tunnel!.hostname, 'a@x.example')).toBe(true);
    expect(t.broker.emulator.canOpen(tunnel!.hostname, 'ada@team.example')).toBe(false);
  });

  it('connect without flags uses the default audience (the team); --public and --allow together are refused', async () => {
    const { env } = t.user();
    const agent = runAgent(['connect', '3000'], env);
    t.defer(() => agent.stop('SIGKILL'));
    await agent.waitFor(/Who can open your team only/);
    const both = await runAgentToEnd(['connect', '3000', '--public', '--allow', 'a@x.example'], t.user().env);
    expect(both.code).toBe(1);
    expect(both.output).toContain('choose --public or --allow, not both');
  });

  it('`tunnel access` changes a running tunnel: public, --allow, team; by id or slug', async () => {
    const { userId, env } = t.user();
    const tunnel = await create(userId);
    let result = await runAgentToEnd(['access', tunnel.tunnelId, 'public'], env);
    expect(result.code, result.output).toBe(0);
    expect(result.output).toContain(`https://${tunnel.hostname}  Who can open: anyone: public`);
    expect(t.broker.emulator.canOpen(tunnel.hostname, null)).toBe(true);

    result = await runAgentToEnd(['access', tunnel.slug, '--allow', 'c@z.example'], env);
    expect(result.code, result.output).toBe(0);
    expect(result.output).toContain('Who can open: only c@z.example');
    expect(t.broker.emulator.canOpen(tunnel.hostname, 'c@z.example')).toBe(true);
    expect(t.broker.emulator.canOpen(tunnel.hostname, null)).toBe(false);

    result = await runAgentToEnd(['access', tunnel.slug, 'team'], env);
    expect(result.code, result.output).toBe(0);
    expect(t.broker.emulator.canOpen(tunnel.hostname, 'ada@team.example')).toBe(true);

    result = await runAgentToEnd(['access', tunnel.slug, 'friends'], env);
    expect(result.code).toBe(1);
    expect(result.output).toContain('say who may open it');
    result = await runAgentToEnd(['access', 'no-such-slug', 'team'], env);
    expect(result.code).toBe(1);
    expect(result.output).toContain('none of your live tunnels');
  });
});
