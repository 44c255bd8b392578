import { describe, expect, it } from 'vitest';
import { CLI_TEST_TIMEOUT_MS, cliRunner } from '../helpers/cli.js';

const runCli = cliRunner();

describe('tunnel-broker, the operator CLI, without the agent commands', { timeout: CLI_TEST_TIMEOUT_MS }, () => {
  it('answers connect, list, stop and login with where the command went (exit 2), and lists none of them in its help', async () => {
    const [connect, list, help] = await Promise.all([
      runCli(['connect', '3000', '--slug', 'demo'], {}),
      runCli(['list'], {}),
      runCli(['--help'], {}),
    ]);
    expect(connect.code).toBe(2);
    expect(connect.stderr).toContain("`connect` is the agent's command now: `tunnel connect`");
    expect(connect.stderr).toContain('npm run agent -- connect');
    expect(list.code).toBe(2);
    expect(list.stderr).toContain('`tunnel list`');
    expect(list.stderr).toContain('tunnel-broker tunnels list');
    expect(help.code).toBe(0);
    expect(help.stdout).not.toMatch(/^\s+(connect|list|stop|login)\b/m);
    expect(help.stdout).toMatch(/^\s+tunnels\b/m);
  });
});
