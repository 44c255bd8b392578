import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { quoteIdent, withDatabase } from '../../src/db/migrate.js';
import { startTestBroker, type TestBroker } from '../helpers/broker.js';
import { CLI_TEST_TIMEOUT_MS, cliEnv, cliRunner } from '../helpers/cli.js';
import { MIGRATION_NAMES } from '../helpers/database.js';
import { testDatabaseServerUrl } from '../helpers/test-services.js';

const runCli = cliRunner();

const ADMIN_URL = testDatabaseServerUrl();

let broker: TestBroker;
const databases: string[] = [];
beforeAll(async () => {
  broker = await startTestBroker();
});
afterAll(async () => {
  await broker?.close();
  await admin(async (c) => {
    for (const name of databases) await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
  });
});

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_URL });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** A database name nobody has created yet. */
function freshDatabase(): string {
  const name = `tb_cli_${randomBytes(6).toString('hex')}`;
  databases.push(name);
  return withDatabase(ADMIN_URL, name);
}

/** doctor's lines by check name: [symbol, the rest]. */
function lines(stdout: string): Record<string, [string, string]> {
  const out: Record<string, [string, string]> = {};
  for (const line of stdout.split('\n')) {
    const m = /^([✓✗!-]) ([a-z ]+): (.*)$/.exec(line);
    if (m) out[m[2]!] = [m[1]!, m[3]!];
  }
  return out;
}

const CHECKS = [
  'configuration', 'database', 'migrations', 'redis', 'cloudflare token', 'cloudflare tunnels', 'cloudflare zone', 'tunnel domain', 'tunnel certificates',
  'cloudflare dns',
];

describe('doctor', { timeout: CLI_TEST_TIMEOUT_MS }, () => {
  it('is all green against a migrated database, Redis and the emulator', async () => {
    const before = broker.emulator.requests.length;
    const run = await runCli(['doctor'], cliEnv(broker));

    expect(run).toMatchObject({ code: 0, stderr: '' });
    const found = lines(run.stdout);
    expect(Object.keys(found).sort()).toEqual([...CHECKS].sort());
    for (const name of CHECKS) expect(found[name]![0], `${name}: ${found[name]![1]}`).toBe('✓');
    expect(found.migrations![1]).toBe(`${MIGRATION_NAMES.length} applied, none pending`);
    expect(found['cloudflare zone']![1]).toBe('zone tunnels.test holds TUNNEL_DOMAIN tunnels.test');
    expect(found['tunnel domain']![1]).toBe("TUNNEL_DOMAIN tunnels.test is its zone's apex: tunnels share cookies with no other site of yours");
    expect(found['tunnel certificates']![1]).toBe("<slug>.tunnels.test is covered by Cloudflare's Universal SSL (*.tunnels.test)");
    expect(run.stdout).toMatch(/^all checks passed$/m);
    // Read-only upstream: verify, list, zone, list; nothing created.
    const endpoints = broker.emulator.requests.slice(before).map((r) => r.endpoint).sort();
    expect(endpoints).toEqual(['dns.list', 'tunnel.list', 'user.tokens.verify', 'zone.get']);
  });

  it('names a bad DATABASE_URL, a refused Cloudflare token and a TUNNEL_DOMAIN outside the zone, each with a fix, and exits 1', async () => {
    const [badDb, badToken, badDomain] = await Promise.all([
      runCli(['doctor'], cliEnv(broker, { DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nowhere' })),
      runCli(['doctor'], cliEnv(broker, { CLOUDFLARE_API_TOKEN: 'not-the-token' })),
      runCli(['doctor', '--json'], cliEnv(broker, { TUNNEL_DOMAIN: 'tunnels.example.org' })),
    ]);

    expect(badDb.code).toBe(1);
    const db = lines(badDb.stdout);
    expect(db.database).toEqual(['✗', expect.stringMatching(/^cannot use postgresql:\/\/postgres@127\.0\.0\.1:1\/nowhere: .*ECONNREFUSED.* — fix: start PostgreSQL, or point DATABASE_URL at it$/)]);
    expect(db.migrations![0]).toBe('-');
    expect(db.redis![0]).toBe('✓');
    expect(db['cloudflare token']![0]).toBe('✓');
    expect(badDb.stdout).toMatch(/^1 check failed$/m);

    expect(badToken.code).toBe(1);
    const token = lines(badToken.stdout);
    expect(token['cloudflare token']).toEqual(['✗', expect.stringMatching(/^Cloudflare refused CLOUDFLARE_API_TOKEN \(HTTP 403, code 10000\) — fix: create an API token with .*Cloudflare Tunnel › Edit.*DNS › Edit/)]);
    for (const name of ['cloudflare tunnels', 'cloudflare zone', 'tunnel domain', 'tunnel certificates', 'cloudflare dns']) expect(token[name]![0]).toBe('-');
    expect(token.database![0]).toBe('✓');
    // The token itself never appears.
    expect(badToken.stdout + badToken.stderr).not.toContain('not-the-token');

    expect(badDomain.code).toBe(1);
    const report = JSON.parse(badDomain.stdout) as { ok: boolean; checks: Array<{ name: string; status: string; message: string; fix?: string }> };
    expect(report.ok).toBe(false);
    expect(report.checks.find((c) => c.name === 'cloudflare zone')).toEqual({
      name: 'cloudflare zone',
      status: 'fail',
      message: `TUNNEL_DOMAIN tunnels.example.org is not inside zone tunnels.test (CLOUDFLARE_ZONE_ID ${broker.emulator.zoneId})`,
      fix: expect.stringContaining('CLOUDFLARE_ZONE_ID'),
    });
    expect(report.checks.filter((c) => c.name.startsWith('tunnel ')).map((c) => c.status)).toEqual(['skipped', 'skipped']);
  });

  it('warns, with the reason, when TUNNEL_DOMAIN is below its zone apex: a zone shared with other sites, and no Universal SSL certificate', async () => {
    // The emulator's zone is tunnels.test: one and two labels below its apex.
    const [oneBelow, twoBelow] = await Promise.all([
      runCli(['doctor'], cliEnv(broker, { TUNNEL_DOMAIN: 'dev.tunnels.test' })),
      runCli(['doctor'], cliEnv(broker, { TUNNEL_DOMAIN: 'a.b.tunnels.test' })),
    ]);
    for (const [run, domain, depth] of [[oneBelow, 'dev.tunnels.test', 2], [twoBelow, 'a.b.tunnels.test', 3]] as const) {
      // Warnings, not failures: the broker works, but the setup is risky.
      expect(run.code, run.stdout).toBe(0);
      const found = lines(run.stdout);
      expect(found['cloudflare zone']).toEqual(['✓', `zone tunnels.test holds TUNNEL_DOMAIN ${domain}`]);
      expect(found['tunnel domain']).toEqual(['!', expect.stringMatching(new RegExp(
        `^TUNNEL_DOMAIN ${domain.replace(/\./g, '\\.')} is below the apex of zone tunnels\\.test, which likely serves your other sites too: ` +
          'every tunnel would receive cookies scoped to tunnels\\.test and could set cookies for its other hosts — fix: serve tunnels from a ' +
          'registrable domain of their own \\(e\\.g\\. tunnels-tunnels\\.test\\)',
      ))]);
      expect(found['tunnel certificates']).toEqual(['!', expect.stringMatching(new RegExp(
        `^tunnel hostnames <slug>\\.${domain.replace(/\./g, '\\.')} are ${depth} labels below zone tunnels\\.test, and Cloudflare's Universal SSL ` +
          'covers only tunnels\\.test and \\*\\.tunnels\\.test: .* — fix: .*Advanced Certificate Manager.*Total TLS',
      ))]);
    }
  });

  it('warns about an identity provider without JWT_ISSUER and JWT_AUDIENCE outside production', async () => {
    const run = await runCli(['doctor'], cliEnv(broker, { JWT_JWKS_URL: 'https://idp.example.test/jwks.json' }));
    expect(run.code).toBe(0);
    expect(lines(run.stdout)['configuration warning']).toEqual(['!', expect.stringMatching(
      /^JWT_ISSUER, JWT_AUDIENCE: should be set with JWT_JWKS_URL: without both, every token .* — fix: .*NODE_ENV=production the broker refuses to start/,
    )]);
  });

  it('reports an invalid configuration by variable and checks nothing else', async () => {
    const run = await runCli(['doctor'], { NODE_ENV: 'production' });
    expect(run.code).toBe(1);
    const found = lines(run.stdout);
    expect(found.configuration![0]).toBe('✗');
    for (const name of ['JWT_SECRET', 'CLOUDFLARE_API_TOKEN', 'CLOUDFLARE_ACCOUNT_ID', 'CLOUDFLARE_ZONE_ID', 'TUNNEL_DOMAIN']) expect(found.configuration![1]).toContain(name);
    for (const name of ['database', 'migrations', 'redis', 'cloudflare']) expect(found[name]![0]).toBe('-');
  });
});

describe('db migrate', { timeout: CLI_TEST_TIMEOUT_MS }, () => {
  it('creates and migrates a fresh database; doctor sees pending migrations before and none after', async () => {
    const missing = freshDatabase();
    const empty = freshDatabase();
    await admin((c) => c.query(`CREATE DATABASE ${quoteIdent(new URL(empty).pathname.slice(1))}`));

    const [beforeMissing, beforeEmpty] = await Promise.all([
      runCli(['doctor'], cliEnv(broker, { DATABASE_URL: missing })),
      runCli(['doctor'], cliEnv(broker, { DATABASE_URL: empty })),
    ]);
    expect(beforeMissing.code).toBe(1);
    expect(lines(beforeMissing.stdout).database).toEqual(['✗', expect.stringMatching(/does not exist — fix: run `tunnel-broker db migrate`/)]);
    expect(beforeEmpty.code).toBe(1);
    expect(lines(beforeEmpty.stdout).migrations).toEqual([
      '✗', `${MIGRATION_NAMES.length} pending: ${MIGRATION_NAMES.join(', ')} — fix: run \`tunnel-broker db migrate\``,
    ]);

    const migrated = await runCli(['db', 'migrate'], cliEnv(broker, { DATABASE_URL: missing }));
    expect(migrated).toMatchObject({ code: 0, stderr: '' });
    expect(migrated.stdout).toMatch(new RegExp(`^created the database; applied ${MIGRATION_NAMES.length} migration\\(s\\) to postgresql://.*: ${MIGRATION_NAMES.join(', ')}\n$`));

    const [again, after] = await Promise.all([
      runCli(['db', 'migrate', '--json'], cliEnv(broker, { DATABASE_URL: missing })),
      runCli(['doctor'], cliEnv(broker, { DATABASE_URL: missing })),
    ]);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual({ applied: [], alreadyApplied: [...MIGRATION_NAMES], createdDatabase: false });
    expect(after.code).toBe(0);
    expect(lines(after.stdout).migrations).toEqual(['✓', `${MIGRATION_NAMES.length} applied, none pending`]);
  });

  it('fails with the reason on stderr when PostgreSQL is unreachable', async () => {
    const run = await runCli(['db', 'migrate'], { DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/nowhere' });
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/^error: migration failed on postgresql:\/\/postgres@127\.0\.0\.1:1\/nowhere:\n.*ECONNREFUSED/);
  });
});
