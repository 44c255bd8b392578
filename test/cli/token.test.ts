import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TEST_JWT_SECRET, useTestBroker } from '../helpers/broker.js';
import { CLI_TEST_TIMEOUT_MS, cliRunner } from '../helpers/cli.js';
import { REPO_ROOT } from '../helpers/process.js';

const runCli = cliRunner();

const broker = useTestBroker();

const env = { NODE_ENV: 'test', JWT_SECRET: TEST_JWT_SECRET };
const claims = (jwt: string) => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8')) as { sub: string; iat: number; exp: number };
const listAs = (jwt: string) => broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: { authorization: `Bearer ${jwt}` } });

describe('token create', { timeout: CLI_TEST_TIMEOUT_MS }, () => {
  it('prints a token the API accepts, for the user and lifetime asked; --json adds its expiry', async () => {
    const [plain, asJson] = await Promise.all([
      runCli(['token', 'create', '--user', 'alice', '--ttl', '1h'], env),
      runCli(['token', 'create', '--user', 'bob', '--json'], env),
    ]);

    expect(plain).toMatchObject({ code: 0, stderr: '' });
    const jwt = plain.stdout.trim();
    expect(jwt.split('.')).toHaveLength(3);
    expect(claims(jwt)).toMatchObject({ sub: 'alice' });
    expect(claims(jwt).exp - claims(jwt).iat).toBe(3600);
    expect((await listAs(jwt)).statusCode).toBe(200);

    expect(asJson.code).toBe(0);
    const body = JSON.parse(asJson.stdout) as { token: string; userId: string; expiresAt: string };
    expect(body.userId).toBe('bob');
    // The default lifetime is 30 days.
    expect(claims(body.token).exp - claims(body.token).iat).toBe(30 * 86_400);
    expect(Math.abs(Date.parse(body.expiresAt) / 1000 - claims(body.token).exp)).toBeLessThan(5);
    expect((await listAs(body.token)).statusCode).toBe(200);
  });

  it('signed with another secret, the API refuses it; without JWT_SECRET it warns on stderr', async () => {
    const other = await runCli(['token', 'create', '--user', 'carol'], { NODE_ENV: 'test' });
    expect(other.code).toBe(0);
    expect(other.stderr).toMatch(/development JWT secret/);
    expect((await listAs(other.stdout.trim())).statusCode).toBe(401);
  });

  it('a missing --user, a bad --ttl, an unknown command: usage errors on stderr, exit 2, nothing on stdout', async () => {
    const runs = await Promise.all([
      runCli(['token', 'create'], env),
      runCli(['token', 'create', '--user', 'dave', '--ttl', 'forever'], env),
      runCli(['tokens'], env),
    ]);
    for (const run of runs) {
      expect(run.code).toBe(2);
      expect(run.stdout).toBe('');
    }
    expect(runs[0]!.stderr).toMatch(/--user/);
    expect(runs[1]!.stderr).toMatch(/Not a duration: "forever"/);
    expect(runs[2]!.stderr).toMatch(/unknown command 'tokens'/);
  });
});

describe('the tunnel-broker bin', { timeout: CLI_TEST_TIMEOUT_MS }, () => {
  const packageJson = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string>; scripts: Record<string, string> };

  it('is declared in package.json, and `npm run cli` / `npm run token` run the same entry point', () => {
    expect(packageJson.bin['tunnel-broker']).toBe('bin/tunnel-broker.mjs');
    expect(packageJson.scripts.cli).toBe('tsx src/cli/main.ts');
    expect(packageJson.scripts.token).toBe('tsx src/cli/main.ts token create --user');
  });

  it('runs the CLI from a checkout (through tsx, or dist/ once built)', async () => {
    const run = await runCli(['token', 'create', '--user', 'erin'], env, { entry: ['bin/tunnel-broker.mjs'] });
    expect(run.code).toBe(0);
    expect((await listAs(run.stdout.trim())).statusCode).toBe(200);
  });

  it('prefers the compiled dist/cli/main.js when there is one, as in the container image', async () => {
    // A stand-in package: the bin next to a dist/ whose main() says which one ran.
    const dir = mkdtempSync(join(tmpdir(), 'tb-bin-'));
    try {
      mkdirSync(join(dir, 'bin'));
      mkdirSync(join(dir, 'dist', 'cli'), { recursive: true });
      cpSync(join(REPO_ROOT, 'bin', 'tunnel-broker.mjs'), join(dir, 'bin', 'tunnel-broker.mjs'));
      writeFileSync(join(dir, 'dist', 'cli', 'main.js'), 'export async function main(argv) { console.log("compiled", JSON.stringify(argv)); process.exit(7); }\n');
      const run = await runCli(['doctor', '--json'], {}, { entry: [join(dir, 'bin', 'tunnel-broker.mjs')] });
      expect(run).toMatchObject({ code: 7, stdout: 'compiled ["doctor","--json"]\n' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
