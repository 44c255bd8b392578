import { describe, expect, it } from 'vitest';
import { runAgent, runAgentToEnd, useAgentBroker } from '../helpers/agent.js';
import { eventually } from '../helpers/broker.js';

// The installed `tunnel-broker` bin runs src/cli/main.ts: the agent's commands must be there,
// with their exit codes intact (that program exits with what its commands report).
const BIN_ENTRY = 'src/cli/main.ts';

const t = useAgentBroker();

describe('tunnel-broker (the bin) runs the agent commands', () => {
  it('lists connect, list, stop and login in its help', async () => {
    const { code, output } = await runAgentToEnd(['--help'], {}, { entry: BIN_ENTRY });
    expect(code).toBe(0);
    for (const command of ['connect [options] <port>', 'list [options]', 'stop [options] <tunnel>', 'login [options]']) expect(output).toContain(command);
  });

  it('connect: serves, ends the tunnel on Ctrl-C and exits 0', async () => {
    const { userId, fake, env } = t.user('bin');
    const agent = runAgent(['connect', '8080'], env, BIN_ENTRY);
    t.defer(() => agent.stop('SIGKILL'));
    await agent.waitFor(/Forwarding\s+https:\/\//);
    await eventually(() => fake.runs().length === 1, { what: 'cloudflared to start', timeoutMs: 30_000 });
    expect(await agent.stop('SIGINT')).toBe(0);
    const res = await t.broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: t.broker.auth(userId) });
    expect(res.json()).toEqual({ tunnels: [] });
  });

  it('connect and list exit 1 on a rejected token, with the message', async () => {
    const { env } = t.user('bin');
    for (const args of [['connect', '8080'], ['list']]) {
      const { code, output } = await runAgentToEnd(args, { ...env, TUNNEL_BROKER_TOKEN: 'nope' }, { entry: BIN_ENTRY });
      expect(code, output).toBe(1);
      expect(output).toContain('rejected the access token');
    }
  });

  it('exits 2 on a usage error', async () => {
    const { env } = t.user('bin');
    const { code, output } = await runAgentToEnd(['connect', 'http'], env, { entry: BIN_ENTRY });
    expect(code).toBe(2);
    expect(output).toContain('must be a port number from 1 to 65535');
  });
});
