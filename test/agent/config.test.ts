import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { AGENT_ENTRY, exitCodeWithin, runAgentToEnd, useAgentBroker } from '../helpers/agent.js';
import { freePort, runCommand } from '../helpers/process.js';

const t = useAgentBroker();

/** A user with one tunnel whose slug names the user, so `list --json` shows whose token was used. */
async function userWithTunnel(label: string) {
  const userId = `${label}-${randomUUID()}`;
  const slug = `${label}-${randomUUID().slice(0, 8)}`;
  const res = await t.broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: t.broker.auth(userId), payload: { port: 3000, requestedSlug: slug } });
  expect(res.statusCode).toBe(201);
  return { userId, slug, token: t.broker.token(userId, 3600) };
}

async function listedSlugs(args: string[], env: Record<string, string>): Promise<string[]> {
  const result = await runAgentToEnd(['list', '--json', ...args], env);
  expect(result.code, result.output).toBe(0);
  const json = result.output.slice(result.output.indexOf('['));
  return (JSON.parse(json) as Array<{ slug: string }>).map((t) => t.slug);
}

describe('agent login and configuration', () => {
  it('login saves server and token under XDG_CONFIG_HOME, the file 0600 and its directory 0700, and later commands use them', async () => {
    const h = t.home();
    const alice = await userWithTunnel('alice');
    const login = await runAgentToEnd(['login', '--server', `${t.url}/`, '--token', alice.token], h.env);
    expect(login.code, login.output).toBe(0);
    const file = join(h.env.XDG_CONFIG_HOME!, 'tunnel-broker', 'config.json');
    expect(login.output).toContain(file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(h.env.XDG_CONFIG_HOME!, 'tunnel-broker')).mode & 0o777).toBe(0o700);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual({ server: t.url, token: alice.token });
    expect(await listedSlugs([], h.env)).toEqual([alice.slug]);
  });

  it('without XDG_CONFIG_HOME the file is ~/.config/tunnel-broker/config.json', async () => {
    const h = t.home();
    const alice = await userWithTunnel('alice');
    const login = await runAgentToEnd(['login', '--server', t.url, '--token', alice.token], { HOME: h.dir });
    expect(login.code, login.output).toBe(0);
    const file = join(h.dir, '.config', 'tunnel-broker', 'config.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(await listedSlugs([], { HOME: h.dir })).toEqual([alice.slug]);
  });

  it('login --token - reads the token from stdin, where neither ps nor shell history shows it', async () => {
    const h = t.home();
    const alice = await userWithTunnel('alice');
    const login = await runAgentToEnd(['login', '--server', t.url, '--token', '-'], h.env, { stdin: `${alice.token}\n` });
    expect(login.code, login.output).toBe(0);
    expect(JSON.parse(readFileSync(join(h.env.XDG_CONFIG_HOME!, 'tunnel-broker', 'config.json'), 'utf8'))).toEqual({ server: t.url, token: alice.token });
    expect(await listedSlugs([], h.env)).toEqual([alice.slug]);
  });

  it('login on a terminal asks for the token and does not echo it', async () => {
    const h = t.home();
    const alice = await userWithTunnel('alice');
    const quote = (word: string) => `'${word.replace(/'/g, `'\\''`)}'`;
    const command = [process.execPath, '--import', 'tsx', AGENT_ENTRY, 'login', '--server', t.url].map(quote).join(' ');
    // script(1) runs it on a pseudo-terminal, as a shell would: stdin is a TTY that echoes unless told not to.
    const login = runCommand('script', ['-qec', command, '/dev/null'], { ...h.env, NO_COLOR: '1' }, { openStdin: true });
    t.defer(() => login.stop('SIGKILL'));
    await login.waitFor(/Access token \(input hidden\): /, 45_000);
    login.child.stdin!.write(`${alice.token}\r`);
    expect(await exitCodeWithin(login, 45_000), login.output()).toBe(0);
    expect(login.output()).toContain('Saved the broker URL and token');
    expect(login.output()).not.toContain(alice.token.slice(0, 20));
    expect(JSON.parse(readFileSync(join(h.env.XDG_CONFIG_HOME!, 'tunnel-broker', 'config.json'), 'utf8'))).toEqual({ server: t.url, token: alice.token });
  });

  it('login with no token and no terminal to ask on says how to give one, and saves nothing', async () => {
    const h = t.home();
    const login = await runAgentToEnd(['login', '--server', t.url], h.env);
    expect(login.code).toBe(1);
    expect(login.output).toContain('--token - reads it from stdin');
    expect(existsSync(join(h.env.XDG_CONFIG_HOME!, 'tunnel-broker', 'config.json'))).toBe(false);
  });

  it('login refuses a token the broker rejects and saves nothing', async () => {
    const h = t.home();
    const result = await runAgentToEnd(['login', '--server', t.url, '--token', 'bad.token.here'], h.env);
    expect(result.code).toBe(1);
    expect(result.output).toContain('Nothing was saved');
    expect(result.output).toContain('npm run token -- <user>');
    expect(existsSync(join(h.env.XDG_CONFIG_HOME!, 'tunnel-broker', 'config.json'))).toBe(false);
  });

  it('takes each setting from the flag, else the environment, else the file', async () => {
    const h = t.home();
    const [fromFile, fromEnv, fromFlag] = [await userWithTunnel('file'), await userWithTunnel('env'), await userWithTunnel('flag')];
    expect((await runAgentToEnd(['login', '--server', t.url, '--token', fromFile.token], h.env)).code).toBe(0);

    expect(await listedSlugs([], h.env)).toEqual([fromFile.slug]);
    expect(await listedSlugs([], { ...h.env, TUNNEL_BROKER_TOKEN: fromEnv.token })).toEqual([fromEnv.slug]);
    expect(await listedSlugs(['--token', fromFlag.token], { ...h.env, TUNNEL_BROKER_TOKEN: fromEnv.token })).toEqual([fromFlag.slug]);

    // The server: the environment beats the file (and points nowhere), the flag beats both.
    const nowhere = `http://127.0.0.1:${await freePort()}`;
    const viaEnv = await runAgentToEnd(['list'], { ...h.env, TUNNEL_BROKER_URL: nowhere, TUNNEL_BROKER_TOKEN: fromEnv.token });
    expect(viaEnv.code).toBe(1);
    expect(viaEnv.output).toContain(`Cannot reach the broker at ${nowhere}`);
    expect(await listedSlugs(['--server', t.url], { ...h.env, TUNNEL_BROKER_URL: nowhere, TUNNEL_BROKER_TOKEN: fromEnv.token })).toEqual([fromEnv.slug]);
  });

  it('takes the request timeout from the flag, else the environment, else the file, and keeps it across a login', async () => {
    const h = t.home();
    const alice = await userWithTunnel('alice');
    // A server that accepts connections and never answers: the error says how long the agent waited.
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => void sockets.add(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    t.defer(() => new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      silent.close(() => resolve());
    }));
    const server = `http://127.0.0.1:${(silent.address() as { port: number }).port}`;
    const dir = join(h.env.XDG_CONFIG_HOME!, 'tunnel-broker');
    const file = join(dir, 'config.json');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(file, JSON.stringify({ server: 'http://127.0.0.1:1', token: 'old', requestTimeout: 0.4 }), { mode: 0o600 });
    // login rewrites the file and keeps the setting.
    expect((await runAgentToEnd(['login', '--server', t.url, '--token', alice.token], h.env)).code).toBe(0);
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual({ server: t.url, token: alice.token, requestTimeout: 0.4 });

    const waited = async (args: string[], env: Record<string, string>) => {
      const result = await runAgentToEnd(['list', '--server', server, '--token', alice.token, ...args], { ...h.env, ...env });
      expect(result.code, result.output).toBe(1);
      return /no answer within ([\d.]+) s/.exec(result.output)?.[1];
    };
    expect(await waited([], {})).toBe('0.4');
    expect(await waited([], { TUNNEL_BROKER_REQUEST_TIMEOUT: '0.3' })).toBe('0.3');
    expect(await waited(['--request-timeout', '0.2'], { TUNNEL_BROKER_REQUEST_TIMEOUT: '0.3' })).toBe('0.2');

    const bad = await runAgentToEnd(['list', '--request-timeout', 'soon'], h.env);
    expect(bad.code).toBe(1);
    expect(bad.output).toContain('--request-timeout must be a number of seconds, more than 0 and at most 600, not "soon"');
  });

  it('never sends the saved token to a server other than the one it was saved for', async () => {
    const h = t.home();
    const alice = await userWithTunnel('alice');
    expect((await runAgentToEnd(['login', '--server', t.url, '--token', alice.token], h.env)).code).toBe(0);
    const other = t.url.replace('127.0.0.1', 'localhost');
    const result = await runAgentToEnd(['list', '--server', other], h.env);
    expect(result.code).toBe(1);
    expect(result.output).toContain(`No access token for ${other} (the token saved in`);
    expect(result.output).toContain(`is for ${t.url}`);
  });

  it('warns when the config file is readable by others', async () => {
    const h = t.home();
    const alice = await userWithTunnel('alice');
    const dir = join(h.env.XDG_CONFIG_HOME!, 'tunnel-broker');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ server: t.url, token: alice.token }));
    chmodSync(join(dir, 'config.json'), 0o644);
    const result = await runAgentToEnd(['list'], h.env);
    expect(result.code).toBe(0);
    expect(result.output).toContain('is readable by other users (mode 0644)');
    expect(result.output).toContain(`chmod 600 ${join(dir, 'config.json')}`);
  });

  it('says how to configure when there is no server or token at all', async () => {
    const h = t.home();
    const noServer = await runAgentToEnd(['list'], h.env);
    expect(noServer.code).toBe(1);
    expect(noServer.output).toContain('No broker URL. Pass --server URL, set TUNNEL_BROKER_URL, or save one with');
    const noToken = await runAgentToEnd(['list', '--server', t.url], h.env);
    expect(noToken.code).toBe(1);
    expect(noToken.output).toContain(`No access token for ${t.url}`);
    expect(noToken.output).toContain('npm run token -- <user>');
  });
});
