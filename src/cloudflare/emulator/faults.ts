import type { ActiveFault, EndpointName, FaultKind, FaultRule } from './types.js';

export const ENDPOINT_NAMES: readonly EndpointName[] = [
  'tunnel.create',
  'tunnel.list',
  'tunnel.get',
  'tunnel.edit',
  'tunnel.delete',
  'tunnel.configuration.put',
  'tunnel.configuration.get',
  'tunnel.connections.list',
  'tunnel.connections.delete',
  'tunnel.connector.get',
  'tunnel.token',
  'dns.create',
  'dns.list',
  'dns.get',
  'dns.edit',
  'dns.update',
  'dns.delete',
  'zone.get',
  'user.tokens.verify',
  'account.tokens.verify',
  'access.app.create',
  'access.app.list',
  'access.app.get',
  'access.app.update',
  'access.app.delete',
  'access.policy.create',
  'access.policy.list',
  'access.policy.get',
  'access.policy.update',
  'access.policy.delete',
  'access.identity_providers.list',
];

const KINDS: readonly FaultKind[] = ['error5xx', 'rateLimit', 'hang', 'latency', 'lostResponse'];

export class FaultRuleError extends Error {}

export interface FaultDecision {
  /** Sum of every latency rule that fired. */
  latencyMs: number;
  /** The first non-latency rule that fired, as it was when it fired. */
  terminal?: ActiveFault;
}

/** mulberry32: tiny, fast, and good enough to make `probability` reproducible. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function validateFaultRule(input: unknown): FaultRule {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new FaultRuleError('fault rule must be an object');
  }
  const r = input as Record<string, unknown>;
  const kind = r.kind;
  if (typeof kind !== 'string' || !KINDS.includes(kind as FaultKind)) {
    throw new FaultRuleError(`kind must be one of ${KINDS.join(', ')}`);
  }
  const rule: FaultRule = { kind: kind as FaultKind };
  if (r.method !== undefined) {
    if (typeof r.method !== 'string' || r.method === '') throw new FaultRuleError('method must be a string');
    rule.method = r.method.toUpperCase();
  }
  if (r.endpoint !== undefined) {
    if (typeof r.endpoint !== 'string' || !ENDPOINT_NAMES.includes(r.endpoint as EndpointName)) {
      throw new FaultRuleError(`endpoint must be one of ${ENDPOINT_NAMES.join(', ')}`);
    }
    rule.endpoint = r.endpoint as EndpointName;
  }
  if (r.pathIncludes !== undefined) {
    if (typeof r.pathIncludes !== 'string') throw new FaultRuleError('pathIncludes must be a string');
    rule.pathIncludes = r.pathIncludes;
  }
  if (r.status !== undefined) {
    if (!Number.isInteger(r.status) || (r.status as number) < 500 || (r.status as number) > 599) {
      throw new FaultRuleError('status must be an integer in 500..599');
    }
    rule.status = r.status as number;
  }
  if (r.retryAfterSec !== undefined) {
    if (typeof r.retryAfterSec !== 'number' || !Number.isFinite(r.retryAfterSec) || r.retryAfterSec < 0) {
      throw new FaultRuleError('retryAfterSec must be a non-negative number');
    }
    rule.retryAfterSec = r.retryAfterSec;
  }
  if (r.latencyMs !== undefined) {
    if (typeof r.latencyMs !== 'number' || !Number.isFinite(r.latencyMs) || r.latencyMs < 0) {
      throw new FaultRuleError('latencyMs must be a non-negative number');
    }
    rule.latencyMs = r.latencyMs;
  }
  if (r.lostAs !== undefined) {
    if (r.lostAs !== 'status502' && r.lostAs !== 'socketReset') {
      throw new FaultRuleError("lostAs must be 'status502' or 'socketReset'");
    }
    rule.lostAs = r.lostAs;
  }
  if (r.times !== undefined) {
    if (!Number.isInteger(r.times) || (r.times as number) < 1) throw new FaultRuleError('times must be a positive integer');
    rule.times = r.times as number;
  }
  if (r.probability !== undefined) {
    if (typeof r.probability !== 'number' || !(r.probability >= 0 && r.probability <= 1)) {
      throw new FaultRuleError('probability must be within 0..1');
    }
    rule.probability = r.probability;
  }
  return rule;
}

export class FaultRegistry {
  #rules: ActiveFault[] = [];
  #nextId = 1;
  #rand: () => number;

  constructor(private readonly seed: number) {
    this.#rand = mulberry32(seed);
  }

  add(input: unknown): string {
    const rule = validateFaultRule(input);
    const id = `fault-${this.#nextId++}`;
    this.#rules.push({ ...rule, id, remaining: rule.times, applied: 0 });
    return id;
  }

  remove(id: string): boolean {
    const before = this.#rules.length;
    this.#rules = this.#rules.filter((r) => r.id !== id);
    return this.#rules.length !== before;
  }

  clear(): number {
    const n = this.#rules.length;
    this.#rules = [];
    return n;
  }

  list(): ActiveFault[] {
    return this.#rules.map((r) => ({ ...r }));
  }

  /** Back to the initial PRNG sequence, so a reset emulator replays the same decisions. */
  reseed(): void {
    this.#rand = mulberry32(this.seed);
  }

  /**
   * Decide, at arrival, which faults shape this request. Rules are tried in the order
   * they were added; every matching latency rule adds up, and only the first terminal
   * rule that fires counts, so later terminal rules keep their `times` and draws.
   */
  decide(req: { method: string; endpoint: EndpointName | 'unknown'; path: string }): FaultDecision {
    if (this.#rules.length === 0) return { latencyMs: 0 };
    let latencyMs = 0;
    let terminal: ActiveFault | undefined;
    for (const rule of this.#rules) {
      if (rule.kind !== 'latency' && terminal) continue;
      if (rule.method !== undefined && rule.method !== req.method) continue;
      if (rule.endpoint !== undefined && rule.endpoint !== req.endpoint) continue;
      if (rule.pathIncludes !== undefined && !req.path.includes(rule.pathIncludes)) continue;
      const p = rule.probability ?? 1;
      if (p < 1 && !(this.#rand() < p)) continue;
      rule.applied++;
      if (rule.remaining !== undefined) rule.remaining--;
      if (rule.kind === 'latency') latencyMs += rule.latencyMs ?? 100;
      else terminal = { ...rule };
    }
    this.#rules = this.#rules.filter((r) => r.remaining === undefined || r.remaining > 0);
    return { latencyMs, terminal };
  }
}
