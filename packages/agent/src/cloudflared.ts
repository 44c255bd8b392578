import { type ChildProcess, spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { backoffDelay } from './backoff.js';
import { type MonotonicClock, monotonicNow } from './clock.js';
import { AgentUsageError, type Env } from './config.js';
import { HOW_TO_INSTALL_CLOUDFLARED } from './messages.js';

/** The arguments cloudflared runs with; the token travels in TUNNEL_TOKEN, never here (`ps` shows argv to every user). */
export const CLOUDFLARED_ARGS = ['tunnel', '--no-autoupdate', 'run'] as const;

async function isExecutableFile(path: string): Promise<boolean> {
  try {
    if (!(await stat(path)).isFile()) return false;
    await access(path, process.platform === 'win32' ? constants.F_OK : constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The cloudflared binary: --cloudflared, else CLOUDFLARED_PATH, else the first `cloudflared`
 * on PATH. Found before anything is created, so a missing binary never leaves a tunnel behind.
 */
export async function locateCloudflared(flag: string | undefined, env: Env, cwd = process.cwd()): Promise<string> {
  const explicit = flag || env.CLOUDFLARED_PATH;
  const source = flag ? '--cloudflared' : 'CLOUDFLARED_PATH';
  const names = process.platform === 'win32' ? ['cloudflared.exe', 'cloudflared'] : ['cloudflared'];
  if (explicit) {
    // A bare name ("cloudflared-2024.6") is looked up on PATH like a shell would.
    if (isAbsolute(explicit) || explicit.includes('/') || explicit.includes('\\')) {
      const path = resolve(cwd, explicit);
      if (await isExecutableFile(path)) return path;
      throw new AgentUsageError(`${source} points at ${path}, which is not an executable file.\n${HOW_TO_INSTALL_CLOUDFLARED}`);
    }
    const found = await searchPath([explicit], env);
    if (found) return found;
    throw new AgentUsageError(`${source} names "${explicit}", which is not on PATH.\n${HOW_TO_INSTALL_CLOUDFLARED}`);
  }
  const found = await searchPath(names, env);
  if (found) return found;
  throw new AgentUsageError(`cloudflared was not found on PATH.\n${HOW_TO_INSTALL_CLOUDFLARED}`);
}

async function searchPath(names: string[], env: Env): Promise<string | undefined> {
  const dirs = (env.PATH ?? '').split(delimiter).filter(Boolean).slice(0, 256);
  for (const dir of dirs) {
    for (const name of names) {
      const candidate = join(dir, name);
      if (await isExecutableFile(candidate)) return candidate;
    }
  }
  return undefined;
}

export interface RestartPolicy {
  /** Give up after this many unexpected exits within `windowMs`. */
  maxCrashes: number;
  windowMs: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** A run this long resets the backoff: it was working, so the next failure is news. */
  stableAfterMs: number;
  /** SIGTERM, then SIGKILL after this long. */
  stopTimeoutMs: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicy = {
  maxCrashes: 5,
  windowMs: 60_000,
  baseDelayMs: 500,
  maxDelayMs: 15_000,
  stableAfterMs: 30_000,
  stopTimeoutMs: 3_000,
};

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when it could not even be started (ENOENT, EACCES). */
  spawnError?: string;
  uptimeMs: number;
  /** The last lines it printed, to say why it died without --verbose. */
  lastOutput: string[];
}

export interface SupervisorEvents {
  onStart?(pid: number, run: number): void;
  /** An exit nobody asked for; `restartInMs` is undefined when the supervisor gave up. */
  onCrash?(info: ExitInfo, restartInMs: number | undefined, crashesInWindow: number): void;
  onGiveUp?(info: ExitInfo, crashesInWindow: number): void;
  onOutput?(line: string): void;
  onConnections?(count: number): void;
}

interface Run {
  child: ChildProcess;
  /** On the monotonic clock. */
  startedAt: number;
  intentional: boolean;
  exited: Promise<void>;
}

const OUTPUT_LINES_KEPT = 20;

/**
 * Runs cloudflared and keeps it running: restarts it with backoff when it exits, and gives up
 * when it keeps exiting (`maxCrashes` within `windowMs`) so the caller can end the tunnel
 * rather than heartbeat one with nothing behind it.
 */
export class CloudflaredSupervisor {
  readonly #path: string;
  readonly #baseEnv: Env;
  readonly #policy: RestartPolicy;
  readonly #events: SupervisorEvents;
  #token: string | undefined;
  #run: Run | undefined;
  #restartTimer: NodeJS.Timeout | undefined;
  #crashes: number[] = [];
  #consecutive = 0;
  #runs = 0;
  #state: 'idle' | 'running' | 'waiting' | 'stopped' | 'gave-up' = 'idle';
  #output: string[] = [];
  #connections = new Set<string>();
  /** Uptimes and the crash window: a wall-clock step must not make a crash loop look stable, or a stable run a crash loop. */
  readonly #now: MonotonicClock;

  constructor(options: { path: string; env: Env; policy?: Partial<RestartPolicy>; events?: SupervisorEvents; now?: MonotonicClock }) {
    this.#now = options.now ?? monotonicNow;
    this.#path = options.path;
    this.#baseEnv = options.env;
    this.#policy = { ...DEFAULT_RESTART_POLICY, ...options.policy };
    this.#events = options.events ?? {};
  }

  get state() {
    return this.#state;
  }

  get pid(): number | undefined {
    return this.#run?.child.pid;
  }

  /** Starts cloudflared with this tunnel token. */
  start(token: string): void {
    if (this.#state === 'stopped' || this.#state === 'gave-up') return;
    this.#token = token;
    this.#spawn();
  }

  /**
   * Stops the running cloudflared (if any) and starts one with a new token, with a clean crash
   * history: a new tunnel is a fresh start.
   */
  async replaceToken(token: string): Promise<void> {
    if (this.#state === 'stopped' || this.#state === 'gave-up') return;
    this.#clearRestart();
    await this.#stopRun();
    // stop() may have been called while the old one was shutting down: it wins.
    if (this.#stopped()) return;
    this.#crashes = [];
    this.#consecutive = 0;
    this.#state = 'idle';
    this.start(token);
  }

  /** Stops for good: SIGTERM, then SIGKILL after `stopTimeoutMs`. Never restarts after this. */
  async stop(): Promise<void> {
    this.#state = 'stopped';
    this.#clearRestart();
    await this.#stopRun();
  }

  #stopped(): boolean {
    return this.#state === 'stopped';
  }

  #clearRestart(): void {
    if (this.#restartTimer) clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
  }

  async #stopRun(): Promise<void> {
    const run = this.#run;
    if (!run) return;
    run.intentional = true;
    if (run.child.exitCode === null && run.child.signalCode === null) {
      run.child.kill('SIGTERM');
      const killed = await Promise.race([run.exited.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), this.#policy.stopTimeoutMs).unref())]);
      if (!killed) {
        run.child.kill('SIGKILL');
        await Promise.race([run.exited, new Promise<void>((r) => setTimeout(r, 2_000).unref())]);
      }
    }
    await run.exited.catch(() => {});
    if (this.#run === run) this.#run = undefined;
  }

  #spawn(): void {
    const token = this.#token;
    if (token === undefined) return;
    this.#runs += 1;
    this.#output = [];
    this.#setConnections(new Set());
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(this.#baseEnv)) if (v !== undefined) env[k] = v;
    // cloudflared needs the tunnel token only; the user's broker credential stays with the agent.
    delete env.TUNNEL_BROKER_TOKEN;
    env.TUNNEL_TOKEN = token;
    const child = spawn(this.#path, [...CLOUDFLARED_ARGS], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: Ctrl-C in the terminal reaches the agent only, which then
      // stops cloudflared itself, in order, instead of racing a crash-and-restart.
      detached: true,
      windowsHide: true,
    });
    let resolveExited!: () => void;
    const run: Run = { child, startedAt: this.#now(), intentional: false, exited: new Promise<void>((r) => (resolveExited = r)) };
    this.#run = run;
    this.#state = 'running';
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      const lines = createInterface({ input: stream, crlfDelay: Infinity });
      lines.on('line', (line) => this.#onLine(run, line));
    }
    // If the agent dies of a bug, cloudflared (in its own process group) must not outlive it
    // serving a tunnel nobody heartbeats. 'exit' handlers run on uncaught exceptions too.
    const killOnExit = () => child.kill('SIGKILL');
    process.once('exit', killOnExit);
    let settled = false;
    const finish = (code: number | null, signal: NodeJS.Signals | null, spawnError?: string) => {
      if (settled) return;
      settled = true;
      process.off('exit', killOnExit);
      resolveExited();
      this.#onExit(run, { code, signal, uptimeMs: this.#now() - run.startedAt, lastOutput: [...this.#output], ...(spawnError ? { spawnError } : {}) });
    };
    child.once('error', (error) => finish(null, null, error.message));
    // 'close', not 'exit': it comes after the last line of output, which says why it died.
    child.once('close', (code, signal) => finish(code, signal));
    if (child.pid !== undefined) this.#events.onStart?.(child.pid, this.#runs);
  }

  #onLine(run: Run, line: string): void {
    if (run !== this.#run) return;
    this.#output.push(line);
    if (this.#output.length > OUTPUT_LINES_KEPT) this.#output.shift();
    this.#events.onOutput?.(line);
    const index = /connIndex=(\d+)/.exec(line)?.[1];
    if (index === undefined) return;
    const next = new Set(this.#connections);
    if (/Registered tunnel connection/.test(line) && !/Unregistered/.test(line)) next.add(index);
    else if (/Unregistered tunnel connection|Serve tunnel error|Connection terminated/i.test(line)) next.delete(index);
    else return;
    this.#setConnections(next);
  }

  #setConnections(next: Set<string>): void {
    const changed = next.size !== this.#connections.size;
    this.#connections = next;
    if (changed) this.#events.onConnections?.(next.size);
  }

  #onExit(run: Run, info: ExitInfo): void {
    if (this.#run === run) {
      this.#run = undefined;
      this.#setConnections(new Set());
    }
    if (run.intentional || this.#state === 'stopped' || this.#state === 'gave-up') return;
    const now = this.#now();
    if (info.uptimeMs >= this.#policy.stableAfterMs) this.#consecutive = 0;
    this.#crashes = [...this.#crashes.filter((t) => now - t < this.#policy.windowMs), now];
    if (this.#crashes.length >= this.#policy.maxCrashes) {
      this.#state = 'gave-up';
      this.#events.onCrash?.(info, undefined, this.#crashes.length);
      this.#events.onGiveUp?.(info, this.#crashes.length);
      return;
    }
    const delay = backoffDelay(this.#consecutive, this.#policy.baseDelayMs, this.#policy.maxDelayMs);
    this.#consecutive += 1;
    this.#state = 'waiting';
    this.#events.onCrash?.(info, delay, this.#crashes.length);
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      if (this.#state === 'waiting') this.#spawn();
    }, delay);
  }
}

/** "exited with code 1", "was killed by SIGKILL", "could not start: spawn EACCES". */
export function describeExit(info: ExitInfo): string {
  if (info.spawnError) return `could not start: ${info.spawnError}`;
  if (info.signal) return `was killed by ${info.signal}`;
  return `exited with code ${info.code}`;
}
