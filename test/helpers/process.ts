import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { withTimeout } from '../../src/util/with-timeout.js';

export { freePort } from '../../src/dev-services/free-port.js';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** How long a killed child may take to exit before the clean-up gives up on it. */
const KILL_WAIT_MS = 10_000;

/** Children this test file started that have not exited (each file has its own module registry). */
const children = new Set<ChildProcess>();
/** How to shut the servers this file started (private PostgreSQL and Redis); each is idempotent. */
const services = new Set<() => Promise<void>>();

/**
 * Registers a child process, so that if a test fails before stopping it (a start that timed
 * out, an assertion between spawn and stop), cleanup-hooks.ts kills it rather than leave it
 * running on the file's database and Redis prefix after they are cleaned up.
 */
export function trackChild<T extends ChildProcess>(child: T): T {
  if (child.exitCode === null && child.signalCode === null) {
    children.add(child);
    child.once('exit', () => children.delete(child));
  }
  return child;
}

/** Registers how to shut a server a test started; cleanup-hooks.ts calls it when the file ends. */
export function trackService(close: () => Promise<void>): void {
  services.add(close);
}

/** SIGKILLs every child this file left running and waits for each to exit, then shuts its servers. */
export async function stopLeftoverProcesses(): Promise<void> {
  // Bounded, so one that will not die cannot use up the hook's time; the rest are still shut.
  await Promise.all([...children].map(async (child) => {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGKILL');
    await withTimeout(exited, KILL_WAIT_MS).catch(() => {});
  }));
  for (const close of services) await withTimeout(close(), KILL_WAIT_MS).catch(() => {});
  services.clear();
}

/** A port that was free a moment ago, on loopback. */
/** The environment a child gets: only what it needs, never the test runner's own settings. */
export function childEnv(env: Record<string, string>): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', LOG_PRETTY: 'false', ...env };
}

export interface RunningProcess {
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
  /** Waits until the output matches, or fails after the timeout. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

/** Runs a TypeScript entry point of this repo with tsx, as `npm start` would. */
export function runTs(entry: string, args: string[], env: Record<string, string>, options: RunOptions = {}): RunningProcess {
  return runCommand(process.execPath, ['--import', 'tsx', entry, ...args], env, options);
}

export interface RunOptions {
  /** Written to its stdin, which is then closed; without it (or `openStdin`), stdin is /dev/null. */
  stdin?: string;
  /** A pipe left open for the test to write to (`child.stdin`). */
  openStdin?: boolean;
  cwd?: string;
}

/** Runs any executable (an installed bin, npm) in this repo with only `env`; output is stdout and stderr together. */
export function runCommand(command: string, args: string[], env: Record<string, string>, options: RunOptions = {}): RunningProcess {
  const child = trackChild(spawn(command, args, { cwd: options.cwd ?? REPO_ROOT, env: childEnv(env), stdio: [options.stdin === undefined && !options.openStdin ? 'ignore' : 'pipe', 'pipe', 'pipe'] }));
  if (options.stdin !== undefined) child.stdin!.end(options.stdin);
  let out = '';
  const listeners = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    out += chunk.toString('utf8');
    for (const l of listeners) l();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    output: () => out,
    exited,
    waitFor(pattern, timeoutMs = 20_000) {
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (pattern.test(out)) {
            cleanup();
            resolve();
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`Timed out waiting for ${pattern} in output:\n${out.slice(-3000)}`));
        }, timeoutMs);
        const onExit = () => {
          cleanup();
          if (pattern.test(out)) resolve();
          else reject(new Error(`Process exited before ${pattern} appeared:\n${out.slice(-3000)}`));
        };
        const cleanup = () => {
          clearTimeout(timer);
          listeners.delete(check);
          child.off('exit', onExit);
        };
        listeners.add(check);
        child.once('exit', onExit);
        check();
      });
    },
    async stop(signal = 'SIGTERM', timeoutMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** Runs to completion; returns exit code and output. */
export async function runTsToEnd(entry: string, args: string[], env: Record<string, string>, timeoutMs = 30_000) {
  return toEnd(runTs(entry, args, env), timeoutMs);
}

/** Waits for the process to exit (SIGKILL after `timeoutMs`); returns exit code and output. */
export async function toEnd(proc: RunningProcess, timeoutMs = 30_000) {
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), timeoutMs);
  const code = await proc.exited;
  clearTimeout(timer);
  return { code, output: proc.output() };
}
