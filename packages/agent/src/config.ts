import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';

/** What `login` saves. One broker at a time, like `gh auth login` with one host. */
export interface AgentConfigFile {
  server?: string;
  token?: string;
  /** Seconds; see {@link parseRequestTimeout}. Not written by `login`, kept when it rewrites the file. */
  requestTimeout?: number;
}

/** Per request to the broker, unless a command sets its own (a DELETE waits longer: see DELETE_TIMEOUT_MS). */
export const DEFAULT_REQUEST_TIMEOUT_SEC = 10;
const MAX_REQUEST_TIMEOUT_SEC = 600;

/** A problem the user can fix; the message says how. */
export class AgentUsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AgentUsageError';
  }
}

export type Env = Record<string, string | undefined>;

/** `$XDG_CONFIG_HOME/tunnel-broker/config.json`, else `~/.config/tunnel-broker/config.json` (the XDG spec ignores a relative XDG_CONFIG_HOME). */
export function configFilePath(env: Env): string {
  const xdg = env.XDG_CONFIG_HOME;
  const base = xdg && isAbsolute(xdg) ? xdg : join(env.HOME || homedir(), '.config');
  return join(base, 'tunnel-broker', 'config.json');
}

export interface LoadedConfigFile {
  path: string;
  config: AgentConfigFile;
  /** Set when the file is readable by others: the token in it is a credential. */
  warning?: string;
}

export async function readConfigFile(env: Env): Promise<LoadedConfigFile> {
  const path = configFilePath(env);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { path, config: {} };
    throw new AgentUsageError(`Cannot read ${path}: ${(error as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new AgentUsageError(`${path} is not valid JSON. Fix it, or delete it and run \`login\` again.`);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new AgentUsageError(`${path} must hold a JSON object. Delete it and run \`login\` again.`);
  const raw = parsed as Record<string, unknown>;
  const config: AgentConfigFile = {};
  if (typeof raw.server === 'string' && raw.server) config.server = raw.server;
  if (typeof raw.token === 'string' && raw.token) config.token = raw.token;
  if (raw.requestTimeout !== undefined) config.requestTimeout = parseRequestTimeout(String(raw.requestTimeout), `"requestTimeout" in ${path}`);
  const mode = (await stat(path)).mode & 0o777;
  const warning = process.platform !== 'win32' && mode & 0o077
    ? `${path} is readable by other users (mode ${mode.toString(8).padStart(4, '0')}); it holds your token. Run: chmod 600 ${path}`
    : undefined;
  return warning ? { path, config, warning } : { path, config };
}

/**
 * Writes the file private from its first byte: the directory 0700, the file created 0600
 * under a temporary name and renamed over the old one, so no reader ever sees a partly
 * written file or a moment with wider permissions.
 */
export async function writeConfigFile(env: Env, config: AgentConfigFile): Promise<string> {
  const path = configFilePath(env);
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const temp = join(dir, `.config.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', 0o600);
  try {
    await handle.writeFile(`${JSON.stringify(config, null, 2)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await chmod(temp, 0o600);
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  return path;
}

/** An http(s) URL without a trailing slash, so "http://h:3000/" and "http://h:3000" name one broker. */
export function normalizeServerUrl(input: string, source: string): string {
  let url: URL;
  try {
    url = new URL(input.trim());
  } catch {
    throw new AgentUsageError(`${source} is not a URL: ${JSON.stringify(input)} (expected e.g. https://broker.example.com)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new AgentUsageError(`${source} must be an http:// or https:// URL, not ${url.protocol}`);
  if (url.username || url.password) throw new AgentUsageError(`${source} must not carry credentials; use --token`);
  url.search = '';
  url.hash = '';
  return url.toString().replace(/\/+$/, '');
}

/** Seconds, a positive number up to 600 (fractions allowed: `0.5`). */
export function parseRequestTimeout(input: string, source: string): number {
  const seconds = Number(input.trim());
  if (!/^\d+(\.\d+)?$/.test(input.trim()) || !(seconds > 0) || seconds > MAX_REQUEST_TIMEOUT_SEC) {
    throw new AgentUsageError(`${source} must be a number of seconds, more than 0 and at most ${MAX_REQUEST_TIMEOUT_SEC}, not ${JSON.stringify(input)}`);
  }
  return seconds;
}

export interface ResolvedConnection {
  server: string;
  token: string;
  /** How long one request to the broker may go unanswered before it counts as lost. */
  requestTimeoutMs: number;
  /** Where each came from, for messages ("the token from TUNNEL_BROKER_TOKEN was rejected"). */
  serverSource: string;
  tokenSource: string;
  warnings: string[];
}

export interface ConnectionFlags {
  server?: string | undefined;
  token?: string | undefined;
  /** Seconds, as typed. */
  requestTimeout?: string | undefined;
}

/**
 * Flag > environment > config file, each setting on its own, with one exception: the saved
 * token is used only with the server it was saved for, so `--server` pointing elsewhere
 * never sends that credential to another host.
 */
export async function resolveConnection(flags: ConnectionFlags, env: Env): Promise<ResolvedConnection> {
  const file = await readConfigFile(env);
  const warnings = file.warning ? [file.warning] : [];
  const pick = (flag: string | undefined, envName: string, fromFile: string | undefined, flagName: string) => {
    if (flag) return { value: flag, source: flagName };
    const fromEnv = env[envName];
    if (fromEnv) return { value: fromEnv, source: envName };
    if (fromFile) return { value: fromFile, source: file.path };
    return undefined;
  };
  const serverPick = pick(flags.server, 'TUNNEL_BROKER_URL', file.config.server, '--server');
  if (!serverPick) {
    throw new AgentUsageError(
      'No broker URL. Pass --server URL, set TUNNEL_BROKER_URL, or save one with:\n' +
        '  tunnel login --server https://broker.example.com',
    );
  }
  const server = normalizeServerUrl(serverPick.value, serverPick.source);
  const savedServer = file.config.server ? safeNormalize(file.config.server) : undefined;
  const fileToken = savedServer === server ? file.config.token : undefined;
  const tokenPick = pick(flags.token, 'TUNNEL_BROKER_TOKEN', fileToken, '--token');
  if (!tokenPick) {
    const hint = file.config.token && savedServer !== server ? ` (the token saved in ${file.path} is for ${file.config.server}, not ${server})` : '';
    throw new AgentUsageError(
      `No access token for ${server}${hint}. Pass --token JWT, set TUNNEL_BROKER_TOKEN, or save one with:\n` +
        `  tunnel login --server ${server}\n` +
        'An operator mints tokens with `npm run token -- <user>` (or `tunnel-broker token create --user <user>`).',
    );
  }
  const token = tokenPick.value.trim();
  const url = new URL(server);
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    warnings.push(`${server} is plain HTTP: your token crosses the network unencrypted. Use https:// for anything but a local broker.`);
  }
  const timeoutPick = pick(flags.requestTimeout, 'TUNNEL_BROKER_REQUEST_TIMEOUT', file.config.requestTimeout?.toString(), '--request-timeout');
  const requestTimeoutSec = timeoutPick ? parseRequestTimeout(timeoutPick.value, timeoutPick.source) : DEFAULT_REQUEST_TIMEOUT_SEC;
  return { server, token, requestTimeoutMs: requestTimeoutSec * 1000, serverSource: serverPick.source, tokenSource: tokenPick.source, warnings };
}

function safeNormalize(input: string): string | undefined {
  try {
    return normalizeServerUrl(input, 'config');
  } catch {
    return undefined;
  }
}

export function isLoopbackHost(hostname: string): boolean {
  return hostname === 'localhost' || hostname.endsWith('.localhost') || /^127\./.test(hostname) || hostname === '[::1]' || hostname === '::1';
}
