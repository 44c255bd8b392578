/**
 * connect's output. On a terminal: one status line redrawn in place under the log lines.
 * Elsewhere (a pipe, a file, CI): plain lines, one per change of state, nothing redrawn.
 */

import { type MonotonicClock, monotonicNow } from './clock.js';

export type AgentState = 'starting' | 'online' | 'reconnecting' | 'restarting cloudflared' | 'recreating' | 'stopping' | 'stopped';

export interface StatusSnapshot {
  state: AgentState;
  url?: string;
  port?: number;
  /** Epoch ms of the last heartbeat the broker accepted (shown as a time; "… ago" is measured on the monotonic clock). */
  lastHeartbeatAt?: number;
  /** cloudflared restarts plus tunnels recreated. */
  reconnects: number;
  /** Edge connections cloudflared reported registered, when it says so. */
  connections?: number;
  /** Why the state is what it is ("broker unreachable", "cloudflared exited with code 1"). */
  detail?: string;
  localListening?: boolean;
}

export interface OutputStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

const CLEAR_LINE = '\r\x1b[2K';

export class StatusLine {
  readonly #out: OutputStream;
  readonly #err: OutputStream;
  readonly #tty: boolean;
  readonly #color: boolean;
  readonly #now: () => number;
  readonly #monotonic: MonotonicClock;
  /** When, on the monotonic clock, the last heartbeat time arrived. */
  #heartbeatSeenAt = 0;
  #snapshot: StatusSnapshot = { state: 'starting', reconnects: 0 };
  #drawn = false;
  #lastPlain = '';
  #ticker: NodeJS.Timeout | undefined;

  /** `now` is the wall clock, for the times printed; `monotonic` measures how long ago the last heartbeat was. */
  constructor(out: OutputStream, err: OutputStream, options: { tty?: boolean; color?: boolean; now?: () => number; monotonic?: MonotonicClock } = {}) {
    this.#out = out;
    this.#err = err;
    this.#tty = options.tty ?? Boolean(out.isTTY);
    this.#color = this.#tty && (options.color ?? true);
    this.#now = options.now ?? Date.now;
    this.#monotonic = options.monotonic ?? monotonicNow;
  }

  get tty(): boolean {
    return this.#tty;
  }

  get snapshot(): Readonly<StatusSnapshot> {
    return this.#snapshot;
  }

  /** Redraws every second on a terminal so "heartbeat 3s ago" stays true; no timer otherwise. */
  start(): void {
    if (!this.#tty || this.#ticker) return;
    this.#ticker = setInterval(() => this.#draw(), 1000);
    this.#ticker.unref();
  }

  /** Leaves the last status on screen as a finished line. */
  stop(): void {
    if (this.#ticker) clearInterval(this.#ticker);
    this.#ticker = undefined;
    if (this.#tty && this.#drawn) this.#out.write('\n');
    this.#drawn = false;
  }

  update(change: Partial<StatusSnapshot>): void {
    this.#snapshot = { ...this.#snapshot, ...change };
    if (change.lastHeartbeatAt !== undefined) this.#heartbeatSeenAt = this.#monotonic();
    if (this.#tty) {
      this.#draw();
      return;
    }
    // Plain mode: a line when something a reader cares about changed, not on every heartbeat.
    const s = this.#snapshot;
    const key = [s.state, s.detail ?? '', s.reconnects, s.url ?? ''].join('|');
    if (key === this.#lastPlain) return;
    this.#lastPlain = key;
    this.#out.write(`[${new Date(this.#now()).toISOString().slice(11, 19)}] ${this.#plainText()}\n`);
  }

  /** A log line above the status line (stdout). */
  info(text: string): void {
    this.#above(this.#out, text);
  }

  /** A warning or error above the status line (stderr). */
  warn(text: string): void {
    this.#above(this.#err, text);
  }

  #above(stream: OutputStream, text: string): void {
    if (this.#tty && this.#drawn) this.#out.write(CLEAR_LINE);
    stream.write(text.endsWith('\n') ? text : `${text}\n`);
    if (this.#tty && this.#drawn) this.#draw();
  }

  #draw(): void {
    if (!this.#tty) return;
    // Some terminals (and ptys without a size) report 0 columns.
    const width = Math.max(20, (this.#out.columns || 100) - 1);
    // Longer than the terminal, the line would wrap and \r would only rewind the last row.
    const line = truncate(this.#ttyText(), width);
    this.#out.write(`${CLEAR_LINE}${this.#paint(line)}`);
    this.#drawn = true;
  }

  #paint(line: string): string {
    if (!this.#color) return line;
    const colour = { online: 32, starting: 36, reconnecting: 33, 'restarting cloudflared': 33, recreating: 33, stopping: 90, stopped: 90 }[this.#snapshot.state];
    return line.replace(/^● [a-z ]+?(?=  |$)/, (m) => `\x1b[${colour}m${m}\x1b[0m`);
  }

  #parts(): string[] {
    const s = this.#snapshot;
    const parts: string[] = [];
    if (s.lastHeartbeatAt !== undefined) parts.push(`heartbeat ${describeAgo(this.#monotonic() - this.#heartbeatSeenAt)}`);
    parts.push(`reconnects ${s.reconnects}`);
    if (s.connections !== undefined && s.connections > 0) parts.push(`edge connections ${s.connections}`);
    if (s.localListening === false && s.port !== undefined) parts.push(`nothing listening on localhost:${s.port}`);
    if (s.detail) parts.push(s.detail);
    return parts;
  }

  #ttyText(): string {
    const s = this.#snapshot;
    return [`● ${s.state}`, ...(s.url ? [s.url] : []), ...this.#parts()].join('  ·  ');
  }

  #plainText(): string {
    const s = this.#snapshot;
    const parts: string[] = [`reconnects ${s.reconnects}`];
    if (s.lastHeartbeatAt !== undefined) parts.push(`last heartbeat ${new Date(s.lastHeartbeatAt).toISOString().slice(11, 19)}`);
    if (s.detail) parts.push(s.detail);
    return `status: ${s.state} (${parts.join(', ')})`;
  }
}

export function describeAgo(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s ago`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m ${s % 60}s ago` : `${Math.floor(m / 60)}h ${m % 60}m ago`;
}

function truncate(text: string, width: number): string {
  const chars = [...text];
  return chars.length <= width ? text : `${chars.slice(0, width - 1).join('')}…`;
}
