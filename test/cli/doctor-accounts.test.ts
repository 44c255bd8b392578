import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../helpers/broker.js';
import { CLI_TEST_TIMEOUT_MS, cliEnv, cliRunner } from '../helpers/cli.js';

const runCli = cliRunner();

let broker: TestBroker;
beforeAll(async () => {
  broker = await startTestBroker({ accounts: [{ name: 'alpha' }, { name: 'beta', maxTunnels: 300 }] });
});
afterAll(async () => {
  await broker?.close();
});

/** The broker's own env with CLOUDFLARE_ACCOUNTS in place of the single-account variables; `patch` edits an account. */
function accountsEnv(patch: (accounts: Array<Record<string, unknown>>) => void = () => {}): Record<string, string> {
  const { CLOUDFLARE_API_TOKEN: _t, CLOUDFLARE_ACCOUNT_ID: _a, CLOUDFLARE_ZONE_ID: _z, CLOUDFLARE_BASE_URL: _b, TUNNEL_DOMAIN: _d, ...env } = cliEnv(broker);
  const accounts = broker.config.cloudflare.accounts.map((a) => ({ ...a }) as Record<string, unknown>);
  patch(accounts);
  return { ...env, CLOUDFLARE_ACCOUNTS: JSON.stringify(accounts) };
}

/** doctor's lines by check name (with its `[account]`): [symbol, the rest]. */
function lines(stdout: string): Record<string, [string, string]> {
  const out: Record<string, [string, string]> = {};
  for (const line of stdout.split('\n')) {
    const m = /^([✓✗!-]) ([a-z ]+(?: \[[a-z0-9_-]+\])?): (.*)$/.exec(line);
    if (m) out[m[2]!] = [m[1]!, m[3]!];
  }
  return out;
}

describe('doctor with CLOUDFLARE_ACCOUNTS', { timeout: CLI_TEST_TIMEOUT_MS }, () => {
  it('checks every account with its own token and names the one that fails', async () => {
    const [good, badBeta] = await Promise.all([
      runCli(['doctor'], accountsEnv()),
      runCli(['doctor'], accountsEnv((accounts) => {
        accounts[1]!.apiToken = 'not-beta-token';
      })),
    ]);
    expect(good).toMatchObject({ code: 0, stderr: '' });
    const ok = lines(good.stdout);
    for (const account of ['alpha', 'beta']) {
      for (const check of ['cloudflare token', 'cloudflare tunnels', 'cloudflare zone', 'cloudflare dns']) expect(ok[`${check} [${account}]`]?.[0], `${check} [${account}]`).toBe('✓');
    }
    expect(ok.configuration![1]).toContain('beta (acc1');
    expect(ok.configuration![1]).toContain('up to 300 tunnels');

    expect(badBeta.code).toBe(1);
    const bad = lines(badBeta.stdout);
    expect(bad['cloudflare token [alpha]']![0]).toBe('✓');
    expect(bad['cloudflare token [beta]']![0]).toBe('✗');
    expect(badBeta.stdout + badBeta.stderr).not.toContain('not-beta-token');
  });

  it('reports a malformed CLOUDFLARE_ACCOUNTS by entry and field, never echoing a token', async () => {
    const run = await runCli(['doctor'], accountsEnv((accounts) => {
      delete accounts[1]!.zoneId;
    }));
    expect(run.code).not.toBe(0);
    expect(run.stdout + run.stderr).toContain('CLOUDFLARE_ACCOUNTS[1]');
    expect(run.stdout + run.stderr).toContain('zoneId');
    for (const e of broker.emulators) expect(run.stdout + run.stderr).not.toContain(e.apiToken);
  });
});
