import { type Command, InvalidArgumentError } from 'commander';
import { BrokerClient, BrokerError, describeAccess, type TunnelAccess, type TunnelSummary } from './broker-client.js';
import { locateCloudflared } from './cloudflared.js';
import { type AgentConfigFile, AgentUsageError, type ConnectionFlags, type Env, normalizeServerUrl, readConfigFile, resolveConnection, writeConfigFile } from './config.js';
import { ConnectSession } from './connect.js';
import { INSPECT_DEFAULTS } from './inspector/exchange-store.js';
import { parseTunnelRef, type TunnelRef, tunnelRefText } from './generated/tunnel-ref.js';
import { describeDuration, HOW_TO_GET_A_TOKEN, tokenExpiry, unauthorizedMessage } from './messages.js';
import { type OutputStream, StatusLine } from './status-line.js';
import { readToken, type TokenInput } from './token-input.js';

/** What the commands touch of the outside world; tests of this module run it as a subprocess, so the defaults are the real ones. */
export interface AgentIo {
  env: Env;
  stdin: TokenInput;
  stdout: OutputStream;
  stderr: OutputStream;
}

function exit(code: number): void {
  if (code !== 0) process.exitCode = code;
}

const SLUG = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** After a clean stop, whatever handle is still open (a keep-alive socket) must not hold the process up. */
const EXIT_GRACE_MS = 3_000;

function parsePort(value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || !Number.isInteger(port) || port < 1 || port > 65_535) throw new InvalidArgumentError('must be a port number from 1 to 65535.');
  return port;
}

/** A port for the inspector: 0 means any free one. */
function parseInspectPort(value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || port > 65_535) throw new InvalidArgumentError('must be a port number from 0 (any free port) to 65535.');
  return port;
}

function parseCount(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 1_000_000) throw new InvalidArgumentError('must be a whole number from 1 to 1000000.');
  return n;
}

/** Bytes, with an optional unit: 65536, 64k, 64KiB, 48m, 48MiB. */
function parseBytes(value: string): number {
  const match = /^(\d+)\s*(k|kb|kib|m|mb|mib)?$/i.exec(value.trim());
  if (!match) throw new InvalidArgumentError('must be a size in bytes, optionally with k or m (64k, 48m).');
  const unit = (match[2] ?? '').toLowerCase();
  const bytes = Number(match[1]) * (unit.startsWith('k') ? 1024 : unit.startsWith('m') ? 1024 * 1024 : 1);
  if (bytes > 4 * 1024 * 1024 * 1024) throw new InvalidArgumentError('must be at most 4 GiB.');
  return bytes;
}

const KIB = (bytes: number) => `${bytes / 1024} KiB`;

/** The broker resolves the name; read here only to refuse an empty one and to reduce a URL to its hostname. */
function parseTunnelArgument(value: string): TunnelRef {
  const ref = parseTunnelRef(value);
  if (ref === undefined) throw new InvalidArgumentError('name a tunnel by its id, hostname, https:// URL or slug.');
  return ref;
}

const TUNNEL_ARGUMENT = 'tunnel id, hostname, https:// URL or slug';

const EMAIL = /^[^\s@,]+@[^\s@,]+\.[^\s@,]+$/;

/** `--allow a@x.com,b@y.com`: 1-20 addresses. */
function parseAllow(value: string): string[] {
  const emails = value.split(',').map((e) => e.trim()).filter(Boolean);
  if (emails.length < 1 || emails.length > 20 || emails.some((e) => !EMAIL.test(e))) throw new InvalidArgumentError('must be 1-20 email addresses, separated by commas.');
  return emails;
}

/** The audience the flags ask for; undefined leaves it to the broker's default. */
function accessFromFlags(options: { public?: boolean; allow?: string[] }): TunnelAccess | undefined {
  if (options.public && options.allow) throw new AgentUsageError('choose --public or --allow, not both.');
  if (options.public) return { mode: 'public' };
  if (options.allow) return { mode: 'emails', emails: options.allow };
  return undefined;
}

function parseSlug(value: string): string {
  const slug = value.toLowerCase();
  if (!SLUG.test(slug) || slug.startsWith('xn--')) throw new InvalidArgumentError('must be a DNS label: letters, digits and inner hyphens, at most 63 characters.');
  return slug;
}

interface CommonOptions extends ConnectionFlags {
  verbose?: boolean;
}

interface ConnectOptions extends CommonOptions {
  slug?: string;
  cloudflared?: string;
  /** --public, --allow: who may open the URL (else the broker's default). */
  public?: boolean;
  allow?: string[];
  /** False for --no-inspect. */
  inspect: boolean;
  inspectPort?: number;
  inspectKeep?: number;
  inspectBodyLimit?: number;
  inspectMemory?: number;
}

function withConnectionOptions(command: Command): Command {
  return command
    .option('--server <url>', 'broker URL (env TUNNEL_BROKER_URL; default: saved by login)')
    .option('--token <jwt>', 'access token (env TUNNEL_BROKER_TOKEN; default: saved by login). Shows in `ps`: prefer login')
    .option('--request-timeout <seconds>', 'how long one request to the broker may go unanswered (env TUNNEL_BROKER_REQUEST_TIMEOUT; default 10)');
}

/** Prints the error the way every command does and returns the exit code. */
function report(io: AgentIo, error: unknown): number {
  if (error instanceof AgentUsageError || error instanceof BrokerError) {
    io.stderr.write(`error: ${error.message}\n`);
    return 1;
  }
  throw error;
}

/** The real process's. stdin is opened only when read (by `login`): touching process.stdin sets it up. */
function processIo(): AgentIo {
  return {
    env: process.env,
    get stdin() {
      return process.stdin;
    },
    stdout: process.stdout,
    stderr: process.stderr,
  };
}

/** `connect`, `list`, `stop` and `login`: the developer's side of the broker, as the `tunnel` bin. */
export function registerAgentCommands(program: Command, io: AgentIo = processIo()): Command {
  withConnectionOptions(
    program
      .command('connect')
      .description('expose a local port: create a tunnel, run cloudflared, keep it alive; Ctrl-C ends it')
      .argument('<port>', 'the local port to expose (http://localhost:<port>)', parsePort)
      .option('--slug <slug>', 'the subdomain to ask for (random when omitted)', parseSlug)
      .option('--public', 'let anyone open the URL (default: the broker\'s, usually your team only)')
      .option('--allow <emails>', 'let only these people open the URL: a@x.com,b@y.com (they log in with an emailed code)', parseAllow),
  )
    .option('--cloudflared <path>', 'the cloudflared binary (env CLOUDFLARED_PATH; default: cloudflared on PATH)')
    .option('-v, --verbose', "show cloudflared's output and every heartbeat", false)
    .option('--inspect-port <port>', `where the request inspector listens on 127.0.0.1 (the next free port if taken; default ${INSPECT_DEFAULTS.port})`, parseInspectPort)
    .option('--no-inspect', 'no inspector: the tunnel goes straight to the port, nothing is recorded')
    .option('--inspect-keep <count>', `how many of the last requests the inspector keeps (default ${INSPECT_DEFAULTS.maxExchanges})`, parseCount)
    .option('--inspect-body-limit <bytes>', `how much of each body it keeps; past that only the size (default ${KIB(INSPECT_DEFAULTS.bodyCapBytes)})`, parseBytes)
    .option('--inspect-memory <bytes>', `the most it keeps in all, bodies and headers (default ${INSPECT_DEFAULTS.memoryCapBytes / 1024 / 1024} MiB)`, parseBytes)
    .action(async (port: number, options: ConnectOptions) => {
      const code = await connect(io, port, options);
      // Everything was closed; this only guards against a stray handle keeping a finished agent alive.
      setTimeout(() => process.exit(code), EXIT_GRACE_MS).unref();
      exit(code);
    });

  withConnectionOptions(
    program
      .command('list')
      .description('list your tunnels that have not ended, or only the one named')
      .argument('[tunnel]', `only this one: ${TUNNEL_ARGUMENT}`, parseTunnelArgument),
  )
    .option('--json', 'print JSON', false)
    .action(async (target: TunnelRef | undefined, options: CommonOptions & { json: boolean }) => {
      exit(await list(io, target, options));
    });

  withConnectionOptions(
    program
      .command('stop')
      .description('end one of your tunnels, by id, hostname, URL or slug')
      .argument('<tunnel>', TUNNEL_ARGUMENT, parseTunnelArgument),
  ).action(async (target: TunnelRef, options: CommonOptions) => {
    exit(await stop(io, target, options));
  });

  withConnectionOptions(
    program
      .command('access')
      .description('change who may open one of your running tunnels: team, public, or --allow a@x.com,b@y.com')
      .argument('<tunnel>', TUNNEL_ARGUMENT, parseTunnelArgument)
      .argument('[audience]', '`team` or `public` (or give --allow instead)'),
  )
    .option('--allow <emails>', 'only these people: a@x.com,b@y.com', parseAllow)
    .action(async (target: TunnelRef, audience: string | undefined, options: CommonOptions & { allow?: string[] }) => {
      exit(await changeAccess(io, target, audience, options));
    });

  program
    .command('login')
    .description('save the broker URL and your access token for the other commands')
    .option('--server <url>', 'broker URL (env TUNNEL_BROKER_URL)')
    .option('--token <jwt>', 'access token; `-` reads it from stdin, and on a terminal it is asked for when not given (env TUNNEL_BROKER_TOKEN). A value typed here shows in `ps` and in shell history')
    .action(async (options: ConnectionFlags) => {
      exit(await login(io, options));
    });

  return program;
}

async function connect(io: AgentIo, port: number, options: ConnectOptions): Promise<number> {
  // `connect 3000 | head -1` closes stdout early: an EPIPE must not crash the agent past its cleanup.
  process.stdout.on('error', () => {});
  process.stderr.on('error', () => {});
  const status = new StatusLine(io.stdout, io.stderr, { color: !io.env.NO_COLOR });
  let session: ConnectSession;
  try {
    const connection = await resolveConnection(options, io.env);
    // Before anything is created: a missing binary must not leave a tunnel behind.
    // Under `npm run`, the cwd is the package root; a relative --cloudflared means the user's directory.
    const cloudflaredPath = await locateCloudflared(options.cloudflared, io.env, io.env.INIT_CWD || process.cwd());
    const inspect = options.inspect === false
      ? (false as const)
      : {
        ...(options.inspectPort !== undefined ? { inspectPort: options.inspectPort } : {}),
        ...(options.inspectKeep !== undefined ? { maxExchanges: options.inspectKeep } : {}),
        ...(options.inspectBodyLimit !== undefined ? { bodyCapBytes: options.inspectBodyLimit } : {}),
        ...(options.inspectMemory !== undefined ? { memoryCapBytes: options.inspectMemory } : {}),
      };
    const access = accessFromFlags(options);
    session = new ConnectSession({ port, slug: options.slug, access, verbose: Boolean(options.verbose), connection, cloudflaredPath, env: io.env, inspect }, status);
  } catch (error) {
    return report(io, error);
  }
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals === 1) {
      status.info(`\n${signal === 'SIGINT' ? 'Ctrl-C' : signal}: stopping cloudflared and ending the tunnel (press Ctrl-C again to quit at once)...`);
      session.requestStop(signal);
    } else session.forceStop();
  };
  const handled: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of handled) process.on(s, onSignal);
  try {
    return await session.run();
  } finally {
    for (const s of handled) process.off(s, onSignal);
  }
}

async function clientFor(io: AgentIo, options: ConnectionFlags) {
  const connection = await resolveConnection(options, io.env);
  for (const warning of connection.warnings) io.stderr.write(`warning: ${warning}\n`);
  return { connection, client: new BrokerClient({ baseUrl: connection.server, accessToken: connection.token, timeoutMs: connection.requestTimeoutMs }) };
}

/** A 401 says where to get a token; anything else as the broker said it. */
function brokerFailure(io: AgentIo, error: unknown, connection: { token: string; tokenSource: string; server: string }): number {
  if (error instanceof BrokerError && error.status === 401) {
    io.stderr.write(`error: ${unauthorizedMessage(error, connection.token, connection.tokenSource, connection.server)}\n`);
    return 1;
  }
  return report(io, error);
}

function describeExpiry(summary: TunnelSummary, now: number): string {
  if (summary.status !== 'active') return summary.status;
  if (!summary.expiresAt) return 'active';
  const left = (Date.parse(summary.expiresAt) - now) / 1000;
  return left > 0 ? `active, expires in ${describeDuration(left)}` : 'active, expiring';
}

function audienceShort(access: TunnelAccess | undefined): string {
  if (!access) return '-';
  return access.mode === 'emails' ? (access.emails ?? []).join(',') : access.mode;
}

/** What a 404 for a named tunnel means to its user. */
function notOneOfYours(ref: TunnelRef): string {
  return 'id' in ref
    ? `none of your tunnels has the id ${ref.id}. See them with: tunnel list`
    : `none of your live tunnels is "${tunnelRefText(ref)}". See them with: tunnel list`;
}

/**
 * One broker request of a tunnel command (list, stop, access): a connection that cannot be
 * resolved, a tunnel that is not the caller's (`target`) and the broker's other refusals
 * are reported alike, as exit code 1 with the reason on stderr.
 */
async function withBrokerRequest(io: AgentIo, options: CommonOptions, target: TunnelRef | undefined, fn: (client: BrokerClient) => Promise<number>): Promise<number> {
  let resolved;
  try {
    resolved = await clientFor(io, options);
  } catch (error) {
    return report(io, error);
  }
  try {
    return await fn(resolved.client);
  } catch (error) {
    if (target !== undefined && error instanceof BrokerError && error.gone) {
      io.stderr.write(`error: ${notOneOfYours(target)}\n`);
      return 1;
    }
    return brokerFailure(io, error, resolved.connection);
  }
}

async function list(io: AgentIo, target: TunnelRef | undefined, options: CommonOptions & { json: boolean }): Promise<number> {
  return withBrokerRequest(io, options, target, async (client) => {
    const tunnels: TunnelSummary[] = target === undefined ? await client.listTunnels() : [await client.getTunnel(tunnelRefText(target))];
    if (options.json) {
      io.stdout.write(`${JSON.stringify(tunnels, null, 2)}\n`);
      return 0;
    }
    if (tunnels.length === 0) {
      io.stdout.write('No tunnels. Start one with: tunnel connect <port>\n');
      return 0;
    }
    const now = Date.now();
    const rows = [['ID', 'URL', 'PORT', 'WHO CAN OPEN', 'STATUS'], ...tunnels.map((t) => [t.id, `https://${t.hostname}`, String(t.port), audienceShort(t.access), describeExpiry(t, now)])];
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const row of rows) io.stdout.write(`${row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')}\n`);
    return 0;
  });
}

/** One request: the broker resolves the id, hostname or slug (a URL was reduced to its hostname). */
async function stop(io: AgentIo, target: TunnelRef, options: CommonOptions): Promise<number> {
  return withBrokerRequest(io, options, target, async (client) => {
    await client.deleteTunnel(tunnelRefText(target));
    io.stdout.write(`Ended ${tunnelRefText(target)}.\n`);
    return 0;
  });
}

async function changeAccess(io: AgentIo, target: TunnelRef, audience: string | undefined, options: CommonOptions & { allow?: string[] }): Promise<number> {
  let access: TunnelAccess;
  if (options.allow && audience !== undefined) {
    io.stderr.write('error: give `team`, `public` or --allow, not two of them.\n');
    return 1;
  }
  if (options.allow) access = { mode: 'emails', emails: options.allow };
  else if (audience === 'team' || audience === 'public') access = { mode: audience };
  else {
    io.stderr.write('error: say who may open it: `team`, `public`, or --allow a@x.com,b@y.com\n');
    return 1;
  }
  return withBrokerRequest(io, options, target, async (client) => {
    const tunnel = await client.updateAccess(tunnelRefText(target), access);
    io.stdout.write(`https://${tunnel.hostname}  Who can open: ${describeAccess(tunnel.access)}\n`);
    return 0;
  });
}

async function login(io: AgentIo, options: ConnectionFlags): Promise<number> {
  const serverInput = options.server || io.env.TUNNEL_BROKER_URL;
  if (!serverInput) {
    io.stderr.write(`error: login needs --server URL (or TUNNEL_BROKER_URL).\n${HOW_TO_GET_A_TOKEN}\n`);
    return 1;
  }
  let server: string;
  let saved: AgentConfigFile;
  let token: string | undefined;
  let tokenSource: string;
  try {
    server = normalizeServerUrl(serverInput, options.server ? '--server' : 'TUNNEL_BROKER_URL');
    // Refuses to overwrite a file it cannot parse, rather than lose what is in it silently.
    saved = (await readConfigFile(io.env)).config;
    // Off the command line, where `ps` and shell history would keep it: `--token -`, or asked for on a terminal.
    if (options.token === '-' || (!options.token && !io.env.TUNNEL_BROKER_TOKEN && io.stdin.isTTY)) {
      token = await readToken(io.stdin, io.stderr);
      tokenSource = io.stdin.isTTY ? 'the prompt' : 'stdin';
    } else {
      token = (options.token || io.env.TUNNEL_BROKER_TOKEN)?.trim();
      tokenSource = options.token ? '--token' : 'TUNNEL_BROKER_TOKEN';
    }
  } catch (error) {
    return report(io, error);
  }
  if (!token) {
    io.stderr.write(`error: login needs a token: --token - reads it from stdin (or run it on a terminal to be asked for it).\n${HOW_TO_GET_A_TOKEN}\n`);
    return 1;
  }
  const exp = tokenExpiry(token);
  if (exp && exp.getTime() <= Date.now()) {
    io.stderr.write(`error: that token expired at ${exp.toISOString()}.\n${HOW_TO_GET_A_TOKEN}\n`);
    return 1;
  }
  // Checked against the broker, so a typo is caught now rather than at the next connect.
  try {
    await new BrokerClient({ baseUrl: server, accessToken: token }).listTunnels();
  } catch (error) {
    if (!(error instanceof BrokerError)) throw error;
    if (error.status === 401) {
      io.stderr.write(`error: ${unauthorizedMessage(error, token, tokenSource, server)}\nNothing was saved.\n`);
      return 1;
    }
    io.stderr.write(`warning: could not check the token (${error.message}); saving it anyway.\n`);
  }
  try {
    const path = await writeConfigFile(io.env, { ...saved, server, token });
    io.stdout.write(`Saved the broker URL and token for ${server} to ${path} (readable only by you).\n`);
    if (exp) io.stdout.write(`The token expires at ${exp.toISOString()}.\n`);
    return 0;
  } catch (error) {
    io.stderr.write(`error: could not save the configuration: ${(error as Error).message}\n`);
    return 1;
  }
}
