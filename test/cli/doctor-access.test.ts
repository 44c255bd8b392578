import { describe, expect, it } from 'vitest';
import { useTestBroker } from '../helpers/broker.js';
import { CLI_TEST_TIMEOUT_MS, cliEnv, cliRunner } from '../helpers/cli.js';

const runCli = cliRunner();
const TEAM = { ACCESS_TEAM_EMAIL_DOMAINS: 'team.example' };
const broker = useTestBroker({ env: TEAM });

/** doctor's lines by check name: [symbol, the rest]. */
function lines(stdout: string): Record<string, [string, string]> {
  const out: Record<string, [string, string]> = {};
  for (const line of stdout.split('\n')) {
    const m = /^([✓✗!-]) ([a-z ]+): (.*)$/.exec(line);
    if (m) out[m[2]!] = [m[1]!, m[3]!];
  }
  return out;
}

describe('doctor with a team rule', { timeout: CLI_TEST_TIMEOUT_MS }, () => {
  it('checks the Access permissions, warns that the team gate is missing until --create-team-gate makes it, and lists the identity providers', async () => {
    const before = await runCli(['doctor'], cliEnv(broker, TEAM));
    const found = lines(before.stdout);
    expect(found['cloudflare access']).toEqual(['✓', `can list the Access applications and policies of account ${broker.emulator.accountId}`]);
    expect(found['access team gate']![0]).toBe('!');
    expect(found['access team gate']![1]).toContain('doctor --create-team-gate');
    expect(found['access identity providers']).toEqual(['✓', 'visitors log in with: One-time PIN (onetimepin)']);
    expect(broker.emulator.accessApps()).toEqual([]);

    const made = await runCli(['doctor', '--create-team-gate'], cliEnv(broker, TEAM));
    expect(lines(made.stdout)['access team gate']).toEqual(['✓', '*.tunnels.test is gated by tb-team: @team.example']);
    expect(broker.emulator.accessApps().map((a) => [a.name, a.domain])).toEqual([['tb-team', '*.tunnels.test']]);

    // A team rule that changed since: the gate no longer matches.
    const changed = await runCli(['doctor'], cliEnv(broker, { ACCESS_TEAM_EMAIL_DOMAINS: 'other.example' }));
    expect(lines(changed.stdout)['access team gate']).toEqual(['!', expect.stringContaining('policy tb-team does not list the configured team')]);
  });

  it('fails the Access line, with the permission to grant, when the token cannot read Access', async () => {
    const remove = broker.emulator.injectFault({ endpoint: 'access.app.list', kind: 'error5xx', status: 503 });
    try {
      const run = await runCli(['doctor'], cliEnv(broker, TEAM));
      const found = lines(run.stdout);
      expect(found['cloudflare access']![0]).toBe('✗');
      expect(run.stdout).toContain('Access: Apps and Policies');
      expect(found['access team gate']![0]).toBe('-');
    } finally {
      remove();
    }
  });
});
