/**
 * The model: what a client of the brokers knows after a sequence of commands. Which
 * tunnels it created (and what their create answers said), which it deleted, which it
 * keeps heartbeating and what every heartbeat answered, its Idempotency-Key calls, and
 * every status any request got. Invariants compare the system with it. Times are epoch ms,
 * comparable with PostgreSQL's timestamps and the brokers' expiresAt (one machine, one clock).
 */

export type Op = 'create' | 'delete' | 'heartbeat' | 'list' | 'probe.list' | 'probe.create' | 'probe.delete' | 'cleanup.delete';

/** One request to a broker and its outcome. */
export interface ApiRecord {
  seq: number;
  at: number;
  op: Op;
  broker: number;
  method: string;
  path: string;
  userId?: string;
  tunnelId?: string;
  status: number;
  code?: string;
  error?: string;
}

export interface HeartbeatAttempt {
  sentAt: number;
  doneAt: number;
  broker: number;
  status: number;
  error?: string;
  /** From a 200: until when the broker says the tunnel is alive. */
  expiresAt?: number;
}

export interface KnownTunnel {
  id: string;
  userIndex: number;
  userId: string;
  slug: string;
  learnedAt: number;
  /** From the create response (creation is the first heartbeat); absent if the model only saw it listed. */
  firstExpiresAt?: number;
  heartbeatToken?: string;
  /** on: the loop heartbeats it; off: never was or silenced; lost: a heartbeat answered 404. */
  heartbeat: 'on' | 'off' | 'lost';
  heartbeatOnSince?: number;
  silencedAt?: number;
  lostAt?: number;
  /** When the model first sent a DELETE for it. */
  deletedAt?: number;
  attempts: HeartbeatAttempt[];
}

/** A create sent with an Idempotency-Key. */
export interface IdempotentCall {
  userIndex: number;
  key: string;
  /** The request as the broker compares it: port and lower-cased slug. */
  canonical: string;
  sentAt: number;
  doneAt: number;
  status: number;
  code?: string;
  tunnelId?: string;
  replayed: boolean;
}

/** Something the harness did to the system, with where the emulator's request log stood. */
export interface HarnessEvent {
  at: number;
  kind: 'kill' | 'restart' | 'flush' | 'fault' | 'fault.cleared';
  detail: string;
  requestIndex: number;
}

/** Per tunnel, at most this many heartbeat attempts are kept (the latest): a minute's worth at 1/s. */
const MAX_ATTEMPTS_KEPT = 120;
const MAX_TIMELINE = 400;

export class Model {
  readonly startedAt = Date.now();
  readonly tunnels: KnownTunnel[] = [];
  readonly #byId = new Map<string, KnownTunnel>();
  readonly records: ApiRecord[] = [];
  readonly idempotent: IdempotentCall[] = [];
  readonly events: HarnessEvent[] = [];
  readonly timeline: string[] = [];
  readonly counts = { commands: 0, faults: 0, kills: 0, flushes: 0 };

  constructor(
    readonly userIds: readonly string[],
    readonly slugs: readonly string[],
  ) {}

  get(id: string): KnownTunnel | undefined {
    return this.#byId.get(id);
  }

  /** Registers a tunnel the client learned about (create answer or listing); returns the one already known if any. */
  learn(t: Omit<KnownTunnel, 'heartbeat' | 'attempts' | 'learnedAt'>): KnownTunnel {
    const known = this.#byId.get(t.id);
    if (known) {
      known.firstExpiresAt ??= t.firstExpiresAt;
      known.heartbeatToken ??= t.heartbeatToken;
      return known;
    }
    const fresh: KnownTunnel = { ...t, learnedAt: Date.now(), heartbeat: 'off', attempts: [] };
    this.tunnels.push(fresh);
    this.#byId.set(fresh.id, fresh);
    return fresh;
  }

  /** The `ref`-th (modulo) known tunnel that passes `filter`. */
  pick(ref: number, filter: (t: KnownTunnel) => boolean): KnownTunnel | undefined {
    const candidates = this.tunnels.filter(filter);
    return candidates.length === 0 ? undefined : candidates[ref % candidates.length];
  }

  beating(): KnownTunnel[] {
    return this.tunnels.filter((t) => t.heartbeat === 'on');
  }

  startHeartbeat(t: KnownTunnel): void {
    if (t.heartbeat === 'on' || t.deletedAt !== undefined) return;
    t.heartbeat = 'on';
    t.heartbeatOnSince = Date.now();
  }

  stopHeartbeat(t: KnownTunnel): void {
    if (t.heartbeat !== 'on') return;
    t.heartbeat = 'off';
    t.silencedAt = Date.now();
  }

  recordAttempt(t: KnownTunnel, attempt: HeartbeatAttempt): void {
    t.attempts.push(attempt);
    if (t.attempts.length > MAX_ATTEMPTS_KEPT) t.attempts.splice(0, t.attempts.length - MAX_ATTEMPTS_KEPT);
    if (attempt.status === 404 && t.heartbeat === 'on') {
      t.heartbeat = 'lost';
      t.lostAt = attempt.doneAt;
    }
  }

  record(r: Omit<ApiRecord, 'seq'>): ApiRecord {
    const rec = { seq: this.records.length, ...r };
    this.records.push(rec);
    return rec;
  }

  note(line: string): void {
    this.timeline.push(`+${this.elapsed(Date.now())} ${line}`);
    if (this.timeline.length > MAX_TIMELINE) this.timeline.splice(0, this.timeline.length - MAX_TIMELINE);
  }

  elapsed(at: number): string {
    return `${((at - this.startedAt) / 1000).toFixed(2)}s`;
  }
}
