import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';

/**
 * A database server run as a child of the broker: its output goes to a log file in its data
 * folder, and it has its own process group, so a Ctrl-C in the terminal reaches the broker
 * alone, which drains its requests before it stops the server.
 */
export interface ServerProcess {
  readonly pid: number;
  /** Whether it has exited. */
  exited(): boolean;
  /** The end of its log, for error messages. */
  logTail(): string;
  /** Sends `signal`, and SIGKILL if it has not exited after `graceMs`; resolves once it has exited. Idempotent. */
  stop(signal: NodeJS.Signals, graceMs: number): Promise<void>;
  /** Sends `signal` and returns at once (for a process that is exiting and cannot wait). */
  signal(signal: NodeJS.Signals): void;
}

export interface SpawnServerOptions {
  command: string;
  args: string[];
  logFile: string;
  cwd?: string;
  uid?: number;
  gid?: number;
  /** What it is sent if this process exits while it still runs (default SIGTERM). */
  exitSignal?: NodeJS.Signals;
}

const LOG_TAIL_CHARS = 2000;

export function spawnServer(options: SpawnServerOptions): ServerProcess {
  const log = openSync(options.logFile, 'a', 0o600);
  let child: ChildProcess;
  try {
    child = spawn(options.command, options.args, {
      cwd: options.cwd,
      uid: options.uid,
      gid: options.gid,
      detached: true,
      stdio: ['ignore', log, log],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', LANG: 'C' },
    });
  } finally {
    closeSync(log);
  }
  let spawnError: Error | undefined;
  child.on('error', (error) => {
    spawnError = error;
  });
  const exit = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const exited = () => child.exitCode !== null || child.signalCode !== null || spawnError !== undefined;
  // Its own process group keeps a terminal's Ctrl-C away from it, so whoever exits without
  // stopping it (a second Ctrl-C, process.exit on a fatal error) at least asks it to stop.
  const onExit = () => {
    if (!exited()) child.kill(options.exitSignal ?? 'SIGTERM');
  };
  process.once('exit', onExit);
  void exit.then(() => process.off('exit', onExit));
  return {
    get pid() {
      return child.pid ?? -1;
    },
    exited,
    logTail() {
      if (spawnError) return spawnError.message;
      try {
        return readFileSync(options.logFile, 'utf8').slice(-LOG_TAIL_CHARS).trim();
      } catch {
        return '';
      }
    },
    signal(signal) {
      if (!exited()) child.kill(signal);
    },
    async stop(signal, graceMs) {
      if (exited()) return;
      child.kill(signal);
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'late'>((resolve) => {
        timer = setTimeout(() => resolve('late'), graceMs);
      });
      const outcome = await Promise.race([exit.then(() => 'done' as const), late]);
      clearTimeout(timer);
      if (outcome === 'late') {
        child.kill('SIGKILL');
        await exit;
      }
    },
  };
}

/** Whether a process with this pid exists (signal 0 checks without sending anything). */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Polls `ready` every `intervalMs` until it answers true, the server exits, or `timeoutMs`
 * passes; bounded in time and in rounds.
 */
export async function waitUntilReady(what: string, server: ServerProcess | undefined, ready: () => Promise<boolean>, timeoutMs: number, intervalMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const maxRounds = Math.ceil(timeoutMs / intervalMs) + 1;
  for (let round = 0; round < maxRounds; round++) {
    if (await ready().catch(() => false)) return;
    if (server?.exited()) throw new Error(`${what} exited while starting:\n${server.logTail()}`);
    if (Date.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`${what} was not ready after ${timeoutMs} ms${server ? `:\n${server.logTail()}` : ''}`);
}
