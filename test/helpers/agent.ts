import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll } from 'vitest';
import { startTestBroker, type TestBroker, type TestBrokerOptions, useTestBroker } from './broker.js';
import { runCommand, runTs, type RunningProcess, type RunOptions, toEnd } from './process.js';

/** The entry `npm run agent` runs. */
export const AGENT_ENTRY = 'packages/agent/src/main.ts';

/** One start of the fake cloudflared, as it recorded itself. */
export interface FakeRun {
  pid: number;
  argv: string[];
  /** TUNNEL_TOKEN from its environment. */
  token: string | null;
  /** Whether the user's broker token leaked into its environment. */
  brokerToken: string | null;
  startedAt: number;
}

export interface FakeCloudflared {
  dir: string;
  /** The executable; also `dir/cloudflared`, so `PATH=dir` finds it. */
  path: string;
  runs(): FakeRun[];
  /** Signals it received: `{pid, signal}`. */
  signals(): Array<{ pid: number; signal: string }>;
  /** Every later start exits 1 at once, like a cloudflared with a broken install or token. */
  crashOnStart(on: boolean): void;
  /** Later starts ignore SIGTERM, like a cloudflared stuck draining connections. */
  ignoreSigterm(on: boolean): void;
  isAlive(pid: number): boolean;
  /** SIGKILLs every run still alive (test cleanup). */
  killAll(): void;
  remove(): void;
}

/**
 * A stand-in for cloudflared: a node script that records its argv and environment, prints a
 * few lines the way cloudflared does, and runs until signalled. Marker files in its directory
 * make it crash at start or ignore SIGTERM.
 */
export function writeFakeCloudflared(): FakeCloudflared {
  const dir = mkdtempSync(join(tmpdir(), 'fake-cloudflared-'));
  const path = join(dir, 'cloudflared');
  const script = `#!${process.execPath}
const fs = require('node:fs');
const dir = ${JSON.stringify(dir)};
const record = (file, value) => fs.appendFileSync(dir + '/' + file, JSON.stringify(value) + '\\n');
// Handlers before the run is recorded: a test that saw the run may signal it at once.
const ignoreTerm = fs.existsSync(dir + '/ignore-sigterm');
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(signal, () => {
    record('signals.jsonl', { pid: process.pid, signal });
    if (!(signal === 'SIGTERM' && ignoreTerm)) process.exit(0);
  });
}
record('runs.jsonl', {
  pid: process.pid,
  argv: process.argv.slice(2),
  token: process.env.TUNNEL_TOKEN ?? null,
  brokerToken: process.env.TUNNEL_BROKER_TOKEN ?? null,
  startedAt: Date.now(),
});
console.error('2030-01-01T00:00:00Z INF Starting tunnel (fake cloudflared ' + process.pid + ')');
if (fs.existsSync(dir + '/crash')) {
  console.error('2030-01-01T00:00:00Z ERR fake cloudflared told to crash');
  process.exit(1);
}
setTimeout(() => console.error('2030-01-01T00:00:00Z INF Registered tunnel connection connIndex=0 location=fake protocol=quic'), 50);
setInterval(() => {}, 1000);
`;
  writeFileSync(path, script);
  chmodSync(path, 0o755);
  const readJsonl = <T>(file: string): T[] => {
    const full = join(dir, file);
    if (!existsSync(full)) return [];
    return readFileSync(full, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as T);
  };
  const marker = (name: string, on: boolean) => (on ? writeFileSync(join(dir, name), '') : rmSync(join(dir, name), { force: true }));
  const isAlive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const fake: FakeCloudflared = {
    dir,
    path,
    runs: () => readJsonl<FakeRun>('runs.jsonl'),
    signals: () => readJsonl<{ pid: number; signal: string }>('signals.jsonl'),
    crashOnStart: (on) => marker('crash', on),
    ignoreSigterm: (on) => marker('ignore-sigterm', on),
    isAlive,
    killAll() {
      for (const run of fake.runs()) {
        if (isAlive(run.pid)) {
          try {
            process.kill(run.pid, 'SIGKILL');
          } catch {
            // gone in between
          }
        }
      }
    },
    remove() {
      fake.killAll();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return fake;
}

/** A home for one test: XDG_CONFIG_HOME and HOME point here, never at the real ones. */
export function tempHome(): { dir: string; env: Record<string, string>; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'agent-home-'));
  return { dir, env: { HOME: dir, XDG_CONFIG_HOME: join(dir, '.config') }, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A real broker (PostgreSQL, Redis, the Cloudflare emulator) listening on loopback. */
export async function startListeningBroker(options: TestBrokerOptions = {}): Promise<{ broker: TestBroker; url: string }> {
  const broker = await startTestBroker(options);
  const url = await broker.app.listen({ port: 0, host: '127.0.0.1' });
  return { broker, url };
}

/** One agent test's user: a private home (config directory), a fake cloudflared, and the env that runs the agent as them. */
export interface AgentUser {
  userId: string;
  home: ReturnType<typeof tempHome>;
  fake: FakeCloudflared;
  env: Record<string, string>;
}

/** What a test file gets from {@link useAgentBroker}. */
export interface AgentTestBroker {
  readonly broker: TestBroker;
  readonly url: string;
  /** Runs after the current test, in reverse order of registration. */
  defer(cleanup: () => unknown): void;
  /** A private home, removed after the test. */
  home(): ReturnType<typeof tempHome>;
  /** A new user with its own home and fake cloudflared, pointed at this broker with a 1-hour access token. */
  user(prefix?: string): AgentUser;
}

/**
 * Registers this file's hooks: one listening broker for the file, and per-test cleanups
 * (homes, fake cloudflareds, agents left running) after each test.
 */
export function useAgentBroker(options: TestBrokerOptions = {}): AgentTestBroker {
  const broker = useTestBroker(options);
  let listening: string | undefined;
  const cleanups: Array<() => unknown> = [];
  beforeAll(async () => {
    listening = await broker.app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  const url = () => {
    if (listening === undefined) throw new Error('useAgentBroker: the broker listens in beforeAll');
    return listening;
  };
  const context: AgentTestBroker = {
    broker,
    get url() {
      return url();
    },
    defer: (cleanup) => void cleanups.push(cleanup),
    home() {
      const home = tempHome();
      cleanups.push(() => home.remove());
      return home;
    },
    user(prefix = 'agent') {
      const userId = `${prefix}-${randomUUID()}`;
      const home = context.home();
      const fake = writeFakeCloudflared();
      cleanups.push(() => fake.remove());
      return { userId, home, fake, env: { ...home.env, TUNNEL_BROKER_URL: url(), TUNNEL_BROKER_TOKEN: broker.token(userId, 3600), CLOUDFLARED_PATH: fake.path } };
    },
  };
  return context;
}

/**
 * `entry` is a TypeScript entry of this repo, run with tsx (by default the agent's source, as
 * `npm run agent` runs it), or an installed `tunnel` bin, run as it is.
 * Waits default to 45 s: on a loaded CI machine starting node with tsx alone can take many
 * seconds. These are upper bounds; the tests that are about speed measure it themselves.
 */
export function runAgent(args: string[], env: Record<string, string>, entry = AGENT_ENTRY, options: RunOptions = {}): RunningProcess {
  const agentEnv = { NO_COLOR: '1', ...env };
  const proc = entry.endsWith('.ts') ? runTs(entry, args, agentEnv, options) : runCommand(entry, args, agentEnv, options);
  return { ...proc, waitFor: (pattern, timeoutMs = 45_000) => proc.waitFor(pattern, timeoutMs) };
}

export function runAgentToEnd(args: string[], env: Record<string, string>, options: { timeoutMs?: number; entry?: string; stdin?: string } = {}) {
  return toEnd(runAgent(args, env, options.entry, options.stdin === undefined ? {} : { stdin: options.stdin }), options.timeoutMs ?? 60_000);
}

/** The agent as a user gets it: its package packed, and the tarball installed into an empty folder. */
export interface InstalledAgent {
  tarball: string;
  /** The installed folder's node_modules/.bin/tunnel. */
  bin: string;
  /** The folder it was installed into. */
  dir: string;
  remove(): void;
}

/**
 * `npm pack` of packages/agent (its prepack builds the bundle), then `npm install --offline` of
 * the tarball into an empty folder with an empty npm cache: it installs only if it needs no
 * other package.
 */
export async function installAgentFromTarball(timeoutMs = 90_000): Promise<InstalledAgent> {
  const dir = mkdtempSync(join(tmpdir(), 'agent-install-'));
  const npm = async (args: string[], cwd?: string) => {
    const { code, output } = await toEnd(runCommand('npm', [...args, '--cache', join(dir, '.npm-cache'), '--no-audit', '--no-fund'], {}, cwd ? { cwd } : {}), timeoutMs);
    if (code !== 0) throw new Error(`npm ${args.join(' ')} exited ${code}:\n${output.slice(-3000)}`);
  };
  try {
    mkdirSync(join(dir, 'packed'));
    mkdirSync(join(dir, 'installed'));
    await npm(['pack', '--workspace', '@tunnel-broker/agent', '--pack-destination', join(dir, 'packed')]);
    const [name, ...more] = readdirSync(join(dir, 'packed'));
    if (!name?.endsWith('.tgz') || more.length > 0) throw new Error(`npm pack made ${[name, ...more].join(', ')}`);
    const tarball = join(dir, 'packed', name);
    await npm(['install', '--offline', tarball], join(dir, 'installed'));
    return { tarball, bin: join(dir, 'installed', 'node_modules', '.bin', 'tunnel'), dir: join(dir, 'installed'), remove: () => rmSync(dir, { recursive: true, force: true }) };
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/** The Cloudflare tunnel id inside a connector token (the emulator's format: base64 JSON `{a, t, s}`). */
export function tunnelIdInToken(token: string): string {
  return (JSON.parse(Buffer.from(token, 'base64').toString('utf8')) as { t: string }).t;
}

export interface ProxiedExchange {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  status: number | 'dropped';
  body: string;
  /** Epoch ms when the request arrived. */
  at: number;
}

export interface FlakyProxy {
  url: string;
  exchanges: ProxiedExchange[];
  /** Creates whose answer the broker sends but the proxy drops (the connection is cut): a lost response. */
  dropCreateAnswers: number;
  /** Heartbeats answered 503 with Retry-After: 1 without reaching the broker. */
  failHeartbeats: number;
  close(): Promise<void>;
}

/**
 * A loopback HTTP proxy in front of a real broker that can lose answers and fail heartbeats:
 * a network between agent and broker, not a fake broker. It records every exchange.
 */
export async function startFlakyProxy(target: string): Promise<FlakyProxy> {
  const proxy: FlakyProxy = { url: '', exchanges: [], dropCreateAnswers: 0, failHeartbeats: 0, close: async () => {} };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      void (async () => {
        const path = req.url ?? '/';
        const record: ProxiedExchange = { method: req.method ?? 'GET', path, headers: { ...req.headers }, status: 'dropped', body: '', at: Date.now() };
        proxy.exchanges.push(record);
        if (req.method === 'POST' && /\/heartbeat$/.test(path) && proxy.failHeartbeats > 0) {
          proxy.failHeartbeats -= 1;
          record.status = 503;
          record.body = JSON.stringify({ code: 'SERVICE_UNAVAILABLE', message: 'proxy says: try again' });
          res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' }).end(record.body);
          return;
        }
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && !['host', 'connection', 'content-length'].includes(k)) headers[k] = v;
        const body = Buffer.concat(chunks);
        const upstream = await fetch(new URL(path, target), { method: req.method, headers, body: body.length > 0 ? body : undefined });
        record.body = await upstream.text();
        if (req.method === 'POST' && path === '/v1/tunnels' && proxy.dropCreateAnswers > 0) {
          proxy.dropCreateAnswers -= 1;
          req.socket.destroy();
          return;
        }
        record.status = upstream.status;
        const out: Record<string, string> = {};
        upstream.headers.forEach((v, k) => {
          if (!['content-length', 'connection', 'keep-alive', 'transfer-encoding', 'content-encoding'].includes(k)) out[k] = v;
        });
        res.writeHead(upstream.status, out).end(record.body);
      })().catch(() => req.socket.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  proxy.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return proxy;
}

/** The agent's exit code, or 'timeout' if it is still running after `ms`. */
export async function exitCodeWithin(agent: RunningProcess, ms: number): Promise<number | null | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([agent.exited, new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
