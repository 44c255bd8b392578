import fc from 'fast-check';
import type { EndpointName, FaultRule } from '../../src/cloudflare/emulator/emulator.js';
import { type Execution, IDEMPOTENCY_KEYS, SLUG_POOL, USERS } from './execution.js';
import type { KnownTunnel, Model } from './model.js';
import { BROKER_COUNT } from './world.js';

/**
 * The commands of the model: what clients do (create, delete, heartbeat, fall silent,
 * list) and what the world does to the brokers (SIGKILL and restart one, flush Redis,
 * Cloudflare faults). Each command draws its parameters up front; tunnels are named by a
 * `ref` resolved against the tunnels the model knows when the command runs, so a sequence
 * replays (and shrinks) the same way whatever ids the brokers hand out.
 */
export type ModelCommand = fc.AsyncCommand<Model, Execution>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const short = (id: string) => id.slice(0, 8);

interface CreateParams {
  user: number;
  via: number;
  slug: number | null;
  key: number | null;
  port: number;
  heartbeat: boolean;
  wait: boolean;
}

function describeCreate(p: CreateParams): string {
  return `u${p.user} via b${p.via}${p.slug === null ? '' : ` slug=s${p.slug}`}${p.key === null ? '' : ` key=k${p.key}`} port=${3000 + p.port}`;
}

/** POST /v1/tunnels as the model's user; learns the tunnel on a 201. */
async function create(x: Execution, p: CreateParams, heartbeat: boolean): Promise<{ status: number; tunnel?: KnownTunnel }> {
  const m = x.model;
  const userId = m.userIds[p.user]!;
  const slug = p.slug === null ? undefined : m.slugs[p.slug]!;
  const body = {
    port: 3000 + p.port,
    ...(slug === undefined ? {} : { requestedSlug: slug }),
    // Port 1 asks for its own audience: an Access application and policy of its own, on top of the team gate.
    ...(p.port === 1 ? { access: { mode: 'emails', emails: ['guest@partner.example'] } } : {}),
  };
  const key = p.key === null ? undefined : x.keyName(p.key);
  const sentAt = Date.now();
  const res = await x.api('create', p.via, 'POST', '/v1/tunnels', { userId, body, ...(key === undefined ? {} : { headers: { 'idempotency-key': key } }) });
  const replayed = res.headers?.get('idempotent-replayed') === 'true';
  const id = res.status === 201 && typeof res.body?.tunnelId === 'string' ? (res.body.tunnelId as string) : undefined;
  if (key !== undefined) {
    m.idempotent.push({
      userIndex: p.user, key, canonical: JSON.stringify([body.port, slug ?? null]), sentAt, doneAt: Date.now(),
      status: res.status, replayed, ...(res.code ? { code: res.code } : {}), ...(id ? { tunnelId: id } : {}),
    });
  }
  let tunnel: KnownTunnel | undefined;
  if (id) {
    const wasKnown = m.get(id) !== undefined;
    tunnel = m.learn({ id, userIndex: p.user, userId, slug: res.body.slug, firstExpiresAt: Date.parse(res.body.expiresAt), heartbeatToken: res.body.heartbeatToken });
    // A replay hands back a tunnel the model already knows: its heartbeats stay as they are.
    if (heartbeat && !wasKnown && !replayed) m.startHeartbeat(tunnel);
  }
  m.note(`create ${describeCreate(p)} -> ${res.status}${res.code ? ` ${res.code}` : ''}${res.error ? ` (${res.error})` : ''}${tunnel ? ` ${short(tunnel.id)} ${tunnel.slug}` : ''}${replayed ? ' replayed' : ''}`);
  return { status: res.status, ...(tunnel ? { tunnel } : {}) };
}

/** `burst` parallel DELETEs of one tunnel, spread over the brokers starting at `via`. */
async function deleteBurst(x: Execution, t: KnownTunnel, burst: number, via: number): Promise<void> {
  x.model.stopHeartbeat(t);
  t.deletedAt ??= Date.now();
  const results = await Promise.all(Array.from({ length: burst }, (_, k) =>
    x.api('delete', (via + k) % BROKER_COUNT, 'DELETE', `/v1/tunnels/${t.id}`, { userId: t.userId, tunnelId: t.id })));
  const statuses = new Map<string, number>();
  for (const r of results) {
    const key = `${r.status}${r.code ? ` ${r.code}` : ''}${r.error ? ` ${r.error}` : ''}`;
    statuses.set(key, (statuses.get(key) ?? 0) + 1);
  }
  x.model.note(`delete ${short(t.id)} ${t.slug} x${burst} -> ${[...statuses].map(([k, n]) => `${n}x ${k}`).join(', ')}`);
}

class CreateCommand implements ModelCommand {
  constructor(readonly p: CreateParams) {}
  check = () => true;
  async run(m: Model, x: Execution): Promise<void> {
    m.counts.commands++;
    const done = create(x, this.p, this.p.heartbeat);
    if (this.p.wait) await done;
    else x.track(done, `create ${describeCreate(this.p)}`);
  }
  toString = () => `Create(${describeCreate(this.p)}${this.p.heartbeat ? ' hb' : ''}${this.p.wait ? '' : ' nowait'})`;
}

interface DeleteWhileCreatingParams {
  user: number;
  createVia: number;
  deleteVia: number;
  slug: number | null;
  burst: number;
  /** An upstream step made slow for this create, so the DELETE lands while it is running. */
  slow: { endpoint: EndpointName; latencyMs: number } | null;
}

/**
 * Fires a create without waiting, DELETEs the tunnel as soon as GET /v1/tunnels lists it
 * (still `creating`), then waits for the create's answer.
 */
class DeleteWhileCreatingCommand implements ModelCommand {
  constructor(readonly p: DeleteWhileCreatingParams) {}
  check = () => true;
  async run(m: Model, x: Execution): Promise<void> {
    m.counts.commands++;
    const { p } = this;
    const userId = m.userIds[p.user]!;
    let removeSlow: (() => void) | undefined;
    if (p.slow) {
      removeSlow = x.world.emulator.injectFault({ kind: 'latency', endpoint: p.slow.endpoint, latencyMs: p.slow.latencyMs, times: 1 });
      m.counts.faults++;
      x.mark('fault', `latency on ${p.slow.endpoint} (latency=${p.slow.latencyMs}ms times=1) for this create`);
    }
    const createParams: CreateParams = { user: p.user, via: p.createVia, slug: p.slug, key: null, port: 0, heartbeat: false, wait: false };
    const before = new Set(m.tunnels.map((t) => t.id));
    const created = create(x, createParams, false);
    let target: KnownTunnel | undefined;
    const deadline = Date.now() + 5000;
    for (let i = 0; i < 500 && Date.now() < deadline && !target; i++) {
      const res = await x.api('list', p.deleteVia, 'GET', '/v1/tunnels', { userId, timeoutMs: 2000 });
      const listed = res.status === 200 ? (res.body.tunnels as Array<{ id: string; slug: string; status: string }>) : [];
      const fresh = listed.find((t) => !before.has(t.id) && t.status === 'creating' && (p.slug === null || t.slug === m.slugs[p.slug]));
      if (fresh) target = m.learn({ id: fresh.id, userIndex: p.user, userId, slug: fresh.slug });
      else if (await Promise.race([created.then(() => true), sleep(20).then(() => false)])) break;
    }
    if (target) {
      m.note(`listed ${short(target.id)} ${target.slug} creating; deleting it`);
      await deleteBurst(x, target, p.burst, p.deleteVia);
    } else {
      m.note('the create was never listed as creating');
    }
    const outcome = await created;
    removeSlow?.();
    // Too late to catch it creating: delete it all the same, as the client meant to.
    if (!target && outcome.tunnel) await deleteBurst(x, outcome.tunnel, p.burst, p.deleteVia);
  }
  toString = () => `DeleteWhileCreating(u${this.p.user} create via b${this.p.createVia} delete via b${this.p.deleteVia}${this.p.slug === null ? '' : ` slug=s${this.p.slug}`} x${this.p.burst}${this.p.slow ? ` slow ${this.p.slow.endpoint} ${this.p.slow.latencyMs}ms` : ''})`;
}

class DeleteCommand implements ModelCommand {
  constructor(readonly p: { ref: number; burst: number; via: number }) {}
  check = (m: Readonly<Model>) => m.tunnels.length > 0;
  async run(m: Model, x: Execution): Promise<void> {
    m.counts.commands++;
    // Mostly tunnels not deleted yet; a known deleted one when there is no other (DELETE is idempotent).
    const t = m.pick(this.p.ref, (t) => t.deletedAt === undefined) ?? m.pick(this.p.ref, () => true)!;
    await deleteBurst(x, t, this.p.burst, this.p.via);
  }
  toString = () => `Delete(#${this.p.ref} x${this.p.burst} via b${this.p.via})`;
}

class HeartbeatCommand implements ModelCommand {
  constructor(readonly p: { ref: number }) {}
  check = (m: Readonly<Model>) => m.tunnels.some((t) => t.heartbeat === 'off' && t.deletedAt === undefined);
  async run(m: Model): Promise<void> {
    m.counts.commands++;
    const t = m.pick(this.p.ref, (t) => t.heartbeat === 'off' && t.deletedAt === undefined)!;
    m.startHeartbeat(t);
    m.note(`heartbeat ${short(t.id)} ${t.slug} on`);
  }
  toString = () => `Heartbeat(#${this.p.ref})`;
}

class SilenceCommand implements ModelCommand {
  constructor(readonly p: { ref: number }) {}
  check = (m: Readonly<Model>) => m.tunnels.some((t) => t.heartbeat === 'on');
  async run(m: Model): Promise<void> {
    m.counts.commands++;
    const t = m.pick(this.p.ref, (t) => t.heartbeat === 'on')!;
    m.stopHeartbeat(t);
    m.note(`heartbeat ${short(t.id)} ${t.slug} silenced`);
  }
  toString = () => `Silence(#${this.p.ref})`;
}

class ListCommand implements ModelCommand {
  constructor(readonly p: { user: number; via: number }) {}
  check = () => true;
  async run(m: Model, x: Execution): Promise<void> {
    m.counts.commands++;
    const userId = m.userIds[this.p.user]!;
    const res = await x.api('list', this.p.via, 'GET', '/v1/tunnels', { userId });
    const listed = res.status === 200 ? (res.body.tunnels as Array<{ id: string; slug: string; status: string }>) : [];
    // A create whose answer was lost still made a tunnel: the model learns of it here.
    for (const t of listed) m.learn({ id: t.id, userIndex: this.p.user, userId, slug: t.slug });
    m.note(`list u${this.p.user} -> ${res.status} [${listed.map((t) => `${short(t.id)} ${t.slug} ${t.status}`).join(', ')}]`);
  }
  toString = () => `List(u${this.p.user} via b${this.p.via})`;
}

class KillCommand implements ModelCommand {
  constructor(readonly p: { slot: number; downMs: number }) {}
  check = () => true;
  async run(m: Model, x: Execution): Promise<void> {
    m.counts.commands++;
    m.counts.kills++;
    const { restarted } = await x.world.kill(this.p.slot, this.p.downMs);
    x.mark('kill', `SIGKILL b${this.p.slot}, restart in ${this.p.downMs} ms`);
    x.track(restarted.then(() => x.mark('restart', `b${this.p.slot} up again`)), `restart of b${this.p.slot}`);
  }
  toString = () => `Kill(b${this.p.slot} down ${this.p.downMs}ms)`;
}

interface KillDuringParams {
  op: 'create' | 'delete';
  slot: number;
  /** The upstream step the request is held at (by a one-off latency) when its broker is killed. */
  step: EndpointName;
  latencyMs: number;
  downMs: number;
  user: number;
  slug: number | null;
  ref: number;
}

/**
 * SIGKILLs a broker in the middle of a create or a delete it is serving: the request is
 * held at one upstream step by a one-off latency, and the broker dies as that step reaches
 * Cloudflare. Whoever is left must complete or roll back what it was doing.
 */
class KillDuringCommand implements ModelCommand {
  constructor(readonly p: KillDuringParams) {}
  check = (m: Readonly<Model>) => this.p.op === 'create' || m.tunnels.some((t) => t.deletedAt === undefined);
  async run(m: Model, x: Execution): Promise<void> {
    m.counts.commands++;
    m.counts.kills++;
    const { p } = this;
    // Both up first, so the request goes to the broker about to die.
    await x.world.allUp();
    const since = x.world.emulator.requests.length;
    const removeLatency = x.world.emulator.injectFault({ kind: 'latency', endpoint: p.step, latencyMs: p.latencyMs, times: 1 });
    m.counts.faults++;
    x.mark('fault', `latency on ${p.step} (latency=${p.latencyMs}ms times=1) to hold a ${p.op} there`);
    if (p.op === 'create') {
      const params: CreateParams = { user: p.user, via: p.slot, slug: p.slug, key: null, port: 1, heartbeat: true, wait: false };
      x.track(create(x, params, true), `create ${describeCreate(params)} on a broker being killed`);
    } else {
      const t = m.pick(p.ref, (k) => k.deletedAt === undefined)!;
      x.track(deleteBurst(x, t, 1, p.slot), `delete of ${short(t.id)} on a broker being killed`);
    }
    const deadline = Date.now() + 5000;
    let reached = false;
    for (let i = 0; i < 500 && Date.now() < deadline && !reached; i++) {
      reached = x.world.emulator.requests.slice(since).some((r) => r.endpoint === p.step);
      if (!reached) await sleep(10);
    }
    const { restarted } = await x.world.kill(p.slot, p.downMs);
    removeLatency();
    x.mark('kill', `SIGKILL b${p.slot} ${reached ? `with its ${p.op} at ${p.step}` : `(its ${p.op} never reached ${p.step})`}, restart in ${p.downMs} ms`);
    x.track(restarted.then(() => x.mark('restart', `b${p.slot} up again`)), `restart of b${p.slot}`);
  }
  toString = () => `KillDuring(${this.p.op} via b${this.p.slot} at ${this.p.step} ${this.p.latencyMs}ms, down ${this.p.downMs}ms${this.p.op === 'create' ? ` u${this.p.user}${this.p.slug === null ? '' : ` slug=s${this.p.slug}`}` : ` #${this.p.ref}`})`;
}

class FlushRedisCommand implements ModelCommand {
  check = () => true;
  async run(m: Model, x: Execution): Promise<void> {
    m.counts.commands++;
    m.counts.flushes++;
    x.mark('flush', 'every key under the brokers\' Redis prefix unlinked');
    await x.world.flushRedis();
  }
  toString = () => 'FlushRedis';
}

class FaultCommand implements ModelCommand {
  constructor(readonly p: { rule: FaultRule; durationMs: number }) {}
  check = () => true;
  async run(m: Model, x: Execution): Promise<void> {
    m.counts.commands++;
    x.injectFault(this.p.rule, this.p.durationMs);
  }
  toString = () => `Fault(${JSON.stringify(this.p.rule)} ${this.p.durationMs}ms)`;
}

class PauseCommand implements ModelCommand {
  constructor(readonly p: { ms: number }) {}
  check = () => true;
  async run(m: Model): Promise<void> {
    m.counts.commands++;
    await sleep(this.p.ms);
  }
  toString = () => `Pause(${this.p.ms}ms)`;
}

/** The endpoints the brokers call; a fault on any of them hits creates, deletes, the reaper or the reconciler. */
const FAULT_ENDPOINTS: EndpointName[] = [
  'tunnel.create', 'tunnel.token', 'tunnel.configuration.put', 'tunnel.list', 'tunnel.connections.delete', 'tunnel.delete',
  'dns.create', 'dns.list', 'dns.delete',
];

const faultRule: fc.Arbitrary<FaultRule> = fc.tuple(
  fc.constantFrom(...FAULT_ENDPOINTS),
  fc.oneof(
    fc.constantFrom(500, 502, 503).map((status): Omit<FaultRule, 'endpoint'> => ({ kind: 'error5xx', status })),
    fc.constantFrom(1, 2).map((retryAfterSec): Omit<FaultRule, 'endpoint'> => ({ kind: 'rateLimit', retryAfterSec })),
    fc.constant<Omit<FaultRule, 'endpoint'>>({ kind: 'hang' }),
    fc.constantFrom('status502' as const, 'socketReset' as const).map((lostAs): Omit<FaultRule, 'endpoint'> => ({ kind: 'lostResponse', lostAs })),
    fc.integer({ min: 200, max: 2500 }).map((latencyMs): Omit<FaultRule, 'endpoint'> => ({ kind: 'latency', latencyMs })),
  ),
).map(([endpoint, rule]) => ({ ...rule, endpoint }));

const user = fc.integer({ min: 0, max: USERS - 1 });
const slot = fc.integer({ min: 0, max: BROKER_COUNT - 1 });
const ref = fc.nat({ max: 50 });
/** One DELETE, or a burst of them. */
const burst = fc.oneof({ weight: 2, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.integer({ min: 5, max: 20 }) });

/** Every command, weighted by repetition (fc.commands picks among the arbitraries uniformly). */
export function commandArbitraries(): fc.Arbitrary<ModelCommand>[] {
  const createCmd = fc.record({
    user,
    via: slot,
    slug: fc.option(fc.integer({ min: 0, max: SLUG_POOL - 1 }), { nil: null, freq: 3 }),
    key: fc.option(fc.integer({ min: 0, max: IDEMPOTENCY_KEYS - 1 }), { nil: null, freq: 2 }),
    port: fc.integer({ min: 0, max: 1 }),
    heartbeat: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    wait: fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  }).map((p) => new CreateCommand(p));
  const deleteWhileCreating = fc.record({
    user,
    createVia: slot,
    deleteVia: slot,
    slug: fc.option(fc.integer({ min: 0, max: SLUG_POOL - 1 }), { nil: null }),
    burst,
    slow: fc.option(fc.record({
      endpoint: fc.constantFrom<EndpointName>('dns.create', 'tunnel.configuration.put', 'tunnel.create'),
      latencyMs: fc.integer({ min: 300, max: 1400 }),
    }), { nil: null, freq: 4 }),
  }).map((p) => new DeleteWhileCreatingCommand(p));
  const deleteCmd = fc.record({ ref, burst, via: slot }).map((p) => new DeleteCommand(p));
  const heartbeat = fc.record({ ref }).map((p) => new HeartbeatCommand(p));
  const silence = fc.record({ ref }).map((p) => new SilenceCommand(p));
  const list = fc.record({ user, via: slot }).map((p) => new ListCommand(p));
  const downMs = fc.integer({ min: 0, max: 2000 });
  const kill = fc.record({ slot, downMs }).map((p) => new KillCommand(p));
  const killDuring = fc.oneof(
    fc.record({
      op: fc.constant('create' as const),
      step: fc.constantFrom<EndpointName>('tunnel.create', 'dns.create', 'tunnel.configuration.put'),
      slot, downMs, user, ref,
      latencyMs: fc.integer({ min: 500, max: 1400 }),
      slug: fc.option(fc.integer({ min: 0, max: SLUG_POOL - 1 }), { nil: null }),
    }),
    fc.record({
      op: fc.constant('delete' as const),
      step: fc.constantFrom<EndpointName>('dns.delete', 'tunnel.connections.delete', 'tunnel.delete'),
      slot, downMs, user, ref,
      latencyMs: fc.integer({ min: 500, max: 1400 }),
      slug: fc.constant(null),
    }),
  ).map((p) => new KillDuringCommand(p));
  const flush = fc.constant(null).map(() => new FlushRedisCommand());
  const fault = fc.record({ rule: faultRule, durationMs: fc.integer({ min: 300, max: 3000 }) }).map((p) => new FaultCommand(p));
  const pause = fc.record({ ms: fc.integer({ min: 100, max: 2500 }) }).map((p) => new PauseCommand(p));
  return [createCmd, createCmd, createCmd, deleteWhileCreating, deleteCmd, deleteCmd, heartbeat, silence, list, kill, killDuring, flush, fault, fault, pause];
}
