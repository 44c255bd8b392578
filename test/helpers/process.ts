import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** A port that was free a moment ago, on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

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
  const child = spawn(command, args, { cwd: options.cwd ?? REPO_ROOT, env: childEnv(env), stdio: [options.stdin === undefined && !options.openStdin ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
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
