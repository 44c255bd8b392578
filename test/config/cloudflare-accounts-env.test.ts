import { describe, expect, it } from 'vitest';
import { loadBootConfig } from '../../src/config/env.js';
import { configProblems } from '../helpers/config-problems.js';

const alpha = { apiToken: 'secret-alpha-token', accountId: 'a'.repeat(32), zoneId: 'z'.repeat(32), tunnelDomain: 'alpha.example.dev' };
const beta = { name: 'beta', apiToken: 'secret-beta-token', accountId: 'b'.repeat(32), zoneId: 'y'.repeat(32), tunnelDomain: 'beta.example.dev', maxTunnels: 300 };
const single = { CLOUDFLARE_API_TOKEN: 't', CLOUDFLARE_ACCOUNT_ID: 'a'.repeat(32), CLOUDFLARE_ZONE_ID: 'z'.repeat(32), TUNNEL_DOMAIN: 'tunnels.example.com' };

const problems = configProblems;

describe('Cloudflare accounts in the configuration', () => {
  it('makes the single-account variables one account, with CLOUDFLARE_MAX_TUNNELS (default 1000) as its capacity', () => {
    expect(loadBootConfig(single).cloudflare.accounts).toEqual([
      { name: 'a'.repeat(32), apiToken: 't', accountId: 'a'.repeat(32), zoneId: 'z'.repeat(32), tunnelDomain: 'tunnels.example.com', maxTunnels: 1000, baseUrl: undefined },
    ]);
    expect(loadBootConfig({ ...single, CLOUDFLARE_MAX_TUNNELS: '40' }).cloudflare.accounts[0]!.maxTunnels).toBe(40);
    expect(loadBootConfig({}).cloudflare).toMatchObject({ mode: 'emulator', accounts: [{ maxTunnels: 1000 }] });
  });

  it('reads CLOUDFLARE_ACCOUNTS: names default to the account id, capacity to CLOUDFLARE_MAX_TUNNELS; the first is the primary', () => {
    const config = loadBootConfig({ CLOUDFLARE_ACCOUNTS: JSON.stringify([alpha, beta]), CLOUDFLARE_MAX_TUNNELS: '900', CLOUDFLARE_BASE_URL: 'http://127.0.0.1:9' });
    expect(config.cloudflare.accounts).toEqual([
      { ...alpha, name: alpha.accountId, maxTunnels: 900, baseUrl: 'http://127.0.0.1:9' },
      { ...beta, baseUrl: 'http://127.0.0.1:9' },
    ]);
    expect(config.cloudflare).toMatchObject({ mode: 'remote', apiToken: alpha.apiToken, accountId: alpha.accountId, zoneId: alpha.zoneId });
    expect(config.tunnels.domain).toBe(alpha.tunnelDomain);
  });

  it('reads the same JSON from CLOUDFLARE_ACCOUNTS_FILE, and names a file it cannot read', () => {
    const files: Record<string, string> = { '/run/secrets/accounts.json': JSON.stringify([beta]) };
    const readFile = (file: string) => {
      const text = files[file];
      if (text === undefined) throw Object.assign(new Error('nope'), { code: 'ENOENT' });
      return text;
    };
    expect(loadBootConfig({ CLOUDFLARE_ACCOUNTS_FILE: '/run/secrets/accounts.json' }, readFile).cloudflare.accounts.map((a) => a.name)).toEqual(['beta']);
    expect(problems({ CLOUDFLARE_ACCOUNTS_FILE: '/missing.json' }, readFile)).toEqual(['CLOUDFLARE_ACCOUNTS_FILE: cannot read /missing.json (ENOENT)']);
  });

  it('refuses CLOUDFLARE_ACCOUNTS together with the single-account variables, or with CLOUDFLARE_ACCOUNTS_FILE', () => {
    expect(problems({ ...single, CLOUDFLARE_ACCOUNTS: JSON.stringify([alpha]) })).toEqual(
      ['CLOUDFLARE_API_TOKEN', 'CLOUDFLARE_ACCOUNT_ID', 'CLOUDFLARE_ZONE_ID', 'TUNNEL_DOMAIN'].map((k) => expect.stringMatching(new RegExp(`^${k}: set either CLOUDFLARE_ACCOUNTS`))),
    );
    expect(problems({ CLOUDFLARE_ACCOUNTS: JSON.stringify([alpha]), CLOUDFLARE_ACCOUNTS_FILE: '/x' })).toContain('CLOUDFLARE_ACCOUNTS, CLOUDFLARE_ACCOUNTS_FILE: set one of them, not both');
  });

  it('names every bad entry and field, and two accounts sharing an id, name, zone or domain, without echoing a token', () => {
    const found = problems({ CLOUDFLARE_ACCOUNTS: JSON.stringify([alpha, { ...beta, zoneId: undefined, maxTunnels: 0 }]) });
    expect(found.some((p) => p.startsWith('CLOUDFLARE_ACCOUNTS[1]') && p.includes('zoneId'))).toBe(true);
    expect(found.some((p) => p.startsWith('CLOUDFLARE_ACCOUNTS[1].maxTunnels'))).toBe(true);
    expect(problems({ CLOUDFLARE_ACCOUNTS: JSON.stringify([alpha, { ...beta, zoneId: alpha.zoneId, tunnelDomain: alpha.tunnelDomain }]) })).toEqual([
      `CLOUDFLARE_ACCOUNTS: two accounts have zoneId "${alpha.zoneId}"`,
      `CLOUDFLARE_ACCOUNTS: two accounts have tunnelDomain "${alpha.tunnelDomain}"`,
    ]);
    const broken = problems({ CLOUDFLARE_ACCOUNTS: `[{"apiToken": "${alpha.apiToken}", ` });
    expect(broken).toEqual(['CLOUDFLARE_ACCOUNTS: not valid JSON (expected an array of accounts)']);
    expect(problems({ CLOUDFLARE_ACCOUNTS: '[]' })).toEqual(['CLOUDFLARE_ACCOUNTS: must be a non-empty JSON array of accounts']);
    expect(JSON.stringify([found, broken])).not.toContain('secret-');
  });

  it('counts CLOUDFLARE_ACCOUNTS as the Cloudflare settings production requires', () => {
    const production = { NODE_ENV: 'production', DATABASE_URL: 'postgres://x@h/db', REDIS_URL: 'redis://h', JWT_SECRET: 'x'.repeat(32) };
    expect(loadBootConfig({ ...production, CLOUDFLARE_ACCOUNTS: JSON.stringify([alpha]) }).cloudflare.mode).toBe('remote');
    expect(problems(production)).toContain('CLOUDFLARE_API_TOKEN: required when NODE_ENV=production');
  });
});
