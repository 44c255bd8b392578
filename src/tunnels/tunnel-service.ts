import { randomUUID } from 'node:crypto';
import type { Config } from '../config/env.js';
import { MAX_BUDGET_WAIT_MS } from '../cloudflare/budget-gate.js';
import type { ProvisionedTunnel, TunnelProvider } from '../cloudflare/tunnel-provider.js';
import { isUpstreamError, type UpstreamError } from '../cloudflare/upstream-error.js';
import { isUniqueViolation } from '../db/database-error.js';
import { AppError } from '../errors/catalogue.js';
import type { Prisma, PrismaClient, Tunnel, TunnelEndReason, TunnelEvent } from '../generated/prisma/client.js';
import { LogEvent, type Logger } from '../logging/logger.js';
import { HeartbeatStateLostError, type HeartbeatStore, type RestoreEntry } from './heartbeat-store.js';
import { normalizeRequestedSlug, RANDOM_SLUG_ATTEMPTS, randomSlug as defaultRandomSlug } from './slug.js';
import { type Actor, MAX_EVENTS_PER_TUNNEL, userActor } from './tunnel-events.js';
import { TunnelRows } from './tunnel-rows.js';

const LIVE_SLUG_INDEX = 'tunnels_live_slug_key';
/** After a failed upstream teardown, the reaper tries again this many sweeps later (or after Retry-After). */
export const END_RETRY_SWEEPS = 3;
const RESTORE_PAGE_SIZE = 1000;
/** Slack on top of the computed worst case of a create or an end: at least this, or two timeouts. */
const MIN_LEASE_MARGIN_MS = 1_000;

export interface CreateTunnelInput {
  port: number;
  requestedSlug?: string | undefined;
}

export interface CreatedTunnel {
  tunnel: Tunnel;
  cloudflaredToken: string;
  expiresAt: Date;
}

export interface TunnelView {
  tunnel: Tunnel;
  expiresAt: Date | null;
}

export type EndOutcome = 'ended' | 'retry_scheduled' | 'not_found';

/** What `tunnels list` shows an operator: every user's tunnels, ended ones on request, with their history. */
export interface OperatorListOptions {
  ownerId?: string | undefined;
  includeEnded?: boolean;
  /** Newest first, at most this many. */
  limit: number;
  /** Also load each tunnel's latest events (at most MAX_EVENTS_PER_TUNNEL). */
  withEvents?: boolean;
}

export interface OperatorTunnelView extends TunnelView {
  /** Oldest first; empty unless asked for. */
  events: TunnelEvent[];
}

export interface TunnelServiceDeps {
  prisma: PrismaClient;
  heartbeats: HeartbeatStore;
  provider: TunnelProvider;
  config: Pick<Config, 'tunnels' | 'cloudflare' | 'reaper'>;
  logger: Logger;
  /** Injectable for tests that need to exhaust the slug space. */
  randomSlug?: () => string;
}

/**
 * The tunnel lifecycle: creating -> active -> ending -> ended.
 *
 * Invariants, and who enforces them:
 * - At most MAX_TUNNELS_PER_USER tunnels not ended per user: a per-user advisory
 *   lock held by the inserting transaction, so concurrent creates count in turn.
 * - One tunnel that is not ended per slug: the partial unique index tunnels_live_slug_key.
 * - A tunnel is ended by whoever moves its row to `ending` (a conditional UPDATE),
 *   and every `ending` row has a deadline in Redis, so if that process dies the
 *   reaper finishes the job. Upstream teardown is idempotent.
 */
export class TunnelService {
  readonly #prisma: PrismaClient;
  readonly #rows: TunnelRows;
  readonly #heartbeats: HeartbeatStore;
  readonly #provider: TunnelProvider;
  readonly #config: TunnelServiceDeps['config'];
  readonly #log: Logger;
  readonly #randomSlug: () => string;
  #restoring: Promise<'intact' | 'rebuilt' | 'busy'> | undefined;
  /** How long a create may take before its row counts as abandoned. */
  readonly createLeaseMs: number;
  /** How long a claimed end may take before another process may retry it. */
  readonly endLeaseMs: number;

  constructor(deps: TunnelServiceDeps) {
    this.#prisma = deps.prisma;
    this.#rows = new TunnelRows(deps.prisma);
    this.#heartbeats = deps.heartbeats;
    this.#provider = deps.provider;
    this.#config = deps.config;
    this.#log = deps.logger;
    this.#randomSlug = deps.randomSlug ?? defaultRandomSlug;
    const { timeoutMs, maxRetries } = deps.config.cloudflare;
    // Worst case of the upstream calls on each path, with the SDK's backoff between retries.
    const perRetriedCall = timeoutMs * (maxRetries + 1) + 10_000 * maxRetries;
    const margin = Math.max(MIN_LEASE_MARGIN_MS, 2 * timeoutMs);
    // A create is at most: tunnel create, an adopting lookup and a token fetch, then the DNS
    // create with its adopting lookup (two pages) in parallel with the ingress PUT.
    this.createLeaseMs = 6 * perRetriedCall + margin;
    // An end: DNS delete (or lookup + delete) with the connections cleanup, then the tunnel
    // delete (maybe twice), each of which may first wait its turn in the request budget.
    const budgetWaitMs = Math.min(deps.config.cloudflare.budget.windowSeconds * 1000 + 1_000, MAX_BUDGET_WAIT_MS);
    this.endLeaseMs = 5 * perRetriedCall + budgetWaitMs + margin;
  }

  async create(ownerId: string, input: CreateTunnelInput, log: Logger = this.#log): Promise<CreatedTunnel> {
    if (!Number.isInteger(input.port) || input.port < 1 || input.port > 65_535) throw new AppError('INVALID_PORT');
    let requested: string | undefined;
    if (input.requestedSlug !== undefined) {
      const check = normalizeRequestedSlug(input.requestedSlug, this.#config.tunnels.reservedSlugs);
      if (!check.ok) {
        if (check.problem === 'reserved') {
          throw new AppError('TUNNEL_SLUG_CONFLICT', { message: 'That slug is reserved.', details: { reason: 'reserved' } });
        }
        throw new AppError('INVALID_INPUT', {
          message: check.problem === 'punycode'
            ? 'requestedSlug must not start with "xn--".'
            : 'requestedSlug must be a DNS label: 1-63 letters, digits or inner hyphens.',
          details: { field: 'requestedSlug' },
        });
      }
      requested = check.slug;
    }

    const row = requested !== undefined ? await this.#insertWithSlug(ownerId, requested, input.port) : await this.#insertWithRandomSlug(ownerId, input.port);
    const tunnelLog = log.child({ tunnelId: row.id });
    // Until it is active, the row's deadline is a lease: if this process dies mid-create,
    // the reaper rolls the create back once the lease runs out.
    await this.#heartbeats.scheduleEnd(row.id, this.createLeaseMs);

    let provisioned: ProvisionedTunnel | undefined;
    let dnsRecordId: string | undefined;
    try {
      provisioned = await this.#provider.createTunnel(row.id);
      const cfTunnelId = provisioned.cfTunnelId;
      // Independent steps run together: the critical path is two upstream round trips.
      const [dns, ingress] = await Promise.allSettled([
        this.#provider.createDnsRecord(row.hostname, cfTunnelId, row.id),
        this.#provider.configureIngress(cfTunnelId, row.hostname, row.port),
      ]);
      if (dns.status === 'fulfilled') dnsRecordId = dns.value;
      if (dns.status === 'rejected') throw dns.reason;
      if (ingress.status === 'rejected') throw ingress.reason;
    } catch (error) {
      // A tunnel create refused before it could make anything (the request budget was spent,
      // or Cloudflare refused it outright) leaves nothing upstream to look for.
      const nothingUpstream = !provisioned && isUpstreamError(error) && error.nothingCreated;
      await this.#rollBackCreate(row, provisioned?.cfTunnelId ?? null, dnsRecordId ?? null, tunnelLog, {
        actor: userActor(ownerId),
        details: { error: failureDetails(error) },
        nothingUpstream,
      });
      throw this.#upstreamToAppError(error);
    }

    const tunnel = await this.#rows.transition(
      { id: row.id, from: ['creating'] },
      { status: 'active', cfTunnelId: provisioned.cfTunnelId, dnsRecordId: dnsRecordId ?? null },
      { type: 'created', actor: userActor(ownerId), details: { hostname: row.hostname, port: row.port, cfTunnelId: provisioned.cfTunnelId, dnsRecordId: dnsRecordId ?? null } },
    );
    if (!tunnel) {
      // Ended while we were creating it (the lease ran out under a very slow upstream): undo.
      await this.#rollBackCreate(row, provisioned.cfTunnelId, dnsRecordId ?? null, tunnelLog, {
        actor: userActor(ownerId),
        details: { reason: 'create_lease_expired' },
      });
      throw new AppError('UPSTREAM_UNAVAILABLE', { message: 'The tunnel provider was too slow; nothing was created.' });
    }
    const expiresAt = await this.#heartbeats.start(tunnel.id, ownerId);
    tunnelLog.info({ event: LogEvent.tunnelCreated, hostname: tunnel.hostname, port: tunnel.port }, 'tunnel created');
    return { tunnel, cloudflaredToken: provisioned.token, expiresAt: new Date(expiresAt) };
  }

  /** Redis only: the hot path. */
  async heartbeat(ownerId: string, tunnelId: string): Promise<Date> {
    let deadline: number | null;
    try {
      deadline = await this.#heartbeats.touch(tunnelId, ownerId);
    } catch (error) {
      if (!(error instanceof HeartbeatStateLostError)) throw error;
      // Redis lost its state: rebuild it from PostgreSQL, and have the agent retry rather
      // than conclude its tunnel is gone.
      void this.restoreHeartbeatState().catch((e: unknown) => this.#log.error({ err: e, event: LogEvent.heartbeatStateRebuildFailed }, 'rebuilding heartbeat state failed'));
      throw new AppError('SERVICE_UNAVAILABLE', { message: 'Heartbeat state is being restored; retry shortly.', retryAfterSec: 1 });
    }
    if (deadline === null) throw new AppError('TUNNEL_NOT_FOUND');
    return new Date(deadline);
  }

  /**
   * Makes sure Redis holds the heartbeat state, rebuilding it from PostgreSQL if Redis came
   * back empty. One rebuild at a time per process (and per deployment, through a Redis lock).
   */
  restoreHeartbeatState(): Promise<'intact' | 'rebuilt' | 'busy'> {
    this.#restoring ??= this.#heartbeats
      .rebuildIfLost(() => this.#liveRows(), 0)
      .then((outcome) => {
        if (outcome === 'rebuilt') {
          this.#log.warn({ event: LogEvent.heartbeatStateRebuilt, ttlSeconds: this.#config.tunnels.ttlSeconds }, 'heartbeat state was missing from Redis (new, restarted or flushed); rebuilt it from PostgreSQL, giving every live tunnel a full TTL');
        }
        return outcome;
      })
      .finally(() => {
        this.#restoring = undefined;
      });
    return this.#restoring;
  }

  async *#liveRows(): AsyncIterable<RestoreEntry[]> {
    let cursor: string | undefined;
    for (let page = 0; page < 100_000; page++) {
      const rows = await this.#prisma.tunnel.findMany({
        where: { status: { not: 'ended' }, ...(cursor ? { id: { gt: cursor } } : {}) },
        select: { id: true, ownerId: true, status: true },
        orderBy: { id: 'asc' },
        take: RESTORE_PAGE_SIZE,
      });
      if (rows.length === 0) return;
      yield rows.map((r) => ({ id: r.id, ownerId: r.status === 'active' ? r.ownerId : null }));
      cursor = rows[rows.length - 1]!.id;
    }
  }

  /**
   * Rows that a crash left in `creating` or `ending` with nobody working on them (not touched
   * for longer than any lease) are made due now, so the reaper completes or rolls them back.
   * Cheap: an index range scan over the few rows in those states.
   */
  async recoverStuck(): Promise<number> {
    const cutoff = new Date(Date.now() - Math.max(this.createLeaseMs, this.endLeaseMs));
    const stuck = await this.#prisma.tunnel.findMany({
      where: { status: { in: ['creating', 'ending'] }, updatedAt: { lt: cutoff } },
      select: { id: true },
      take: RESTORE_PAGE_SIZE,
    });
    for (const { id } of stuck) {
      // Touch the row so the next pass does not pick it again while the reaper handles it.
      await this.#prisma.tunnel.updateMany({ where: { id, status: { in: ['creating', 'ending'] } }, data: { updatedAt: new Date() } });
      await this.#heartbeats.scheduleEnd(id, 0);
    }
    if (stuck.length > 0) this.#log.warn({ event: LogEvent.tunnelRecovered, count: stuck.length }, 'rows left creating/ending by a crash were scheduled for completion');
    return stuck.length;
  }

  async list(ownerId: string): Promise<TunnelView[]> {
    const tunnels = await this.#prisma.tunnel.findMany({
      where: { ownerId, status: { not: 'ended' } },
      orderBy: { createdAt: 'asc' },
    });
    const deadlines = await this.#heartbeats.deadlines(tunnels.map((t) => t.id));
    return tunnels.map((tunnel, i) => ({ tunnel, expiresAt: toDate(deadlines[i]) }));
  }

  async get(ownerId: string, tunnelId: string): Promise<TunnelView> {
    const tunnel = await this.#prisma.tunnel.findFirst({ where: { id: tunnelId, ownerId, status: { not: 'ended' } } });
    if (!tunnel) throw new AppError('TUNNEL_NOT_FOUND');
    const [deadline] = await this.#heartbeats.deadlines([tunnel.id]);
    return { tunnel, expiresAt: toDate(deadline) };
  }

  /** A tunnel's latest events (at most `limit`), oldest first. Callers check ownership first. */
  async events(tunnelId: string, limit = MAX_EVENTS_PER_TUNNEL): Promise<TunnelEvent[]> {
    const latest = await this.#prisma.tunnelEvent.findMany({ where: { tunnelId }, orderBy: { id: 'desc' }, take: limit });
    return latest.reverse();
  }

  /** Every user's tunnels, newest first, for operators; `total` counts all that match. */
  async listForOperator(options: OperatorListOptions): Promise<{ tunnels: OperatorTunnelView[]; total: number }> {
    const where: Prisma.TunnelWhereInput = {
      ...(options.ownerId !== undefined ? { ownerId: options.ownerId } : {}),
      ...(options.includeEnded ? {} : { status: { not: 'ended' } }),
    };
    const [rows, total] = await Promise.all([
      this.#prisma.tunnel.findMany({
        where,
        orderBy: [{ createdAt: 'desc' }, { id: 'asc' }],
        take: options.limit,
        // Prisma applies `take` per tunnel.
        include: options.withEvents ? { events: { orderBy: { id: 'desc' }, take: MAX_EVENTS_PER_TUNNEL } } : undefined,
      }),
      this.#prisma.tunnel.count({ where }),
    ]);
    const deadlines = await this.#heartbeats.deadlines(rows.map((t) => t.id));
    const tunnels = rows.map((row, i) => {
      const { events, ...tunnel } = row as Tunnel & { events?: TunnelEvent[] };
      return { tunnel, expiresAt: tunnel.status === 'ended' ? null : toDate(deadlines[i]), events: (events ?? []).reverse() };
    });
    return { tunnels, total };
  }

  /** One tunnel by id, whatever its state, or the live one with that hostname: what an operator names. */
  findForOperator(ref: { id: string } | { hostname: string }): Promise<Tunnel | null> {
    if ('id' in ref) return this.#prisma.tunnel.findUnique({ where: { id: ref.id } });
    return this.#prisma.tunnel.findFirst({ where: { hostname: ref.hostname, status: { not: 'ended' } } });
  }

  /**
   * Ends the caller's tunnel. Idempotent: deleting a tunnel that has already ended succeeds.
   * If Cloudflare fails, the tunnel stays `ending`, the reaper retries, and the caller gets
   * the upstream error. `actor` is who asked: the owner by default, or an operator.
   */
  async delete(ownerId: string, tunnelId: string, log: Logger = this.#log, actor: Actor = userActor(ownerId)): Promise<void> {
    const claimed = await this.#rows.transition(
      { id: tunnelId, ownerId, from: ['creating', 'active'] },
      { status: 'ending', endReason: 'deleted' },
      { type: 'delete_requested', actor },
    );
    let row = claimed;
    if (!row) {
      const existing = await this.#prisma.tunnel.findFirst({ where: { id: tunnelId, ownerId } });
      if (!existing) throw new AppError('TUNNEL_NOT_FOUND');
      if (existing.status === 'ended') return;
      // Already ending (an earlier DELETE or the reaper): help it finish.
      row = existing;
    } else {
      await this.#heartbeats.scheduleEnd(row.id, this.endLeaseMs);
    }
    const outcome = await this.finishEnd(row, log.child({ tunnelId: row.id }), actor);
    if (outcome.outcome === 'retry_scheduled') throw this.#upstreamToAppError(outcome.error);
  }

  /**
   * The reaper's entry point for a due tunnel it has leased: a lapsed heartbeat, an
   * abandoned create, or an end to retry. Returns what happened.
   */
  async endDue(tunnelId: string, log: Logger = this.#log): Promise<EndOutcome> {
    // A lapsed heartbeat (the common case), else a create abandoned past its lease,
    // else an end to retry. Each claim is a conditional UPDATE: one process wins it.
    let row = await this.#claimForEnd(tunnelId, 'active', 'heartbeat_lapsed');
    row ??= await this.#claimForEnd(tunnelId, 'creating', 'create_failed');
    if (row) {
      log.info({ event: LogEvent.tunnelHeartbeatLapsed, tunnelId, userId: row.ownerId, reason: row.endReason }, 'tunnel due; ending it');
    } else {
      // An end to retry: touching updated_at marks it as being worked on (see recoverStuck).
      row = await this.#rows.touchEnding(tunnelId);
      if (!row) {
        await this.#heartbeats.forget(tunnelId);
        return 'not_found';
      }
    }
    const { outcome } = await this.finishEnd(row, log.child({ tunnelId, userId: row.ownerId }), 'reaper');
    return outcome;
  }

  #claimForEnd(tunnelId: string, from: 'active' | 'creating', reason: TunnelEndReason): Promise<Tunnel | undefined> {
    return this.#rows.transition({ id: tunnelId, from: [from] }, { status: 'ending', endReason: reason },
      from === 'active'
        ? { type: 'heartbeat_lapsed', actor: 'reaper', details: { ttlSeconds: this.#config.tunnels.ttlSeconds } }
        // Nobody activated it within the create lease: its broker died, or upstream was far too slow.
        : { type: 'create_failed', actor: 'reaper', details: { reason: 'create_abandoned' } });
  }

  /**
   * Upstream teardown, then the row to `ended` and Redis forgotten; on failure, a retry is
   * scheduled. `actor` is whoever is finishing the end, for the audit trail.
   */
  async finishEnd(row: Tunnel, log: Logger, actor: Actor = 'system'): Promise<{ outcome: 'ended' } | { outcome: 'retry_scheduled'; error: UpstreamError | Error }> {
    try {
      await this.#provider.teardown({ rowId: row.id, hostname: row.hostname, cfTunnelId: row.cfTunnelId, dnsRecordId: row.dnsRecordId });
    } catch (error) {
      const retryAfterMs = isUpstreamError(error) && error.retryAfterSec !== undefined ? error.retryAfterSec * 1000 : 0;
      const retryInMs = Math.max(END_RETRY_SWEEPS * this.#config.reaper.intervalSeconds * 1000, retryAfterMs);
      await this.#heartbeats.scheduleEnd(row.id, retryInMs);
      log.warn({ event: LogEvent.tunnelEndFailed, err: error, reason: row.endReason }, 'upstream teardown failed; will retry');
      await this.#recordEndFailure(row, actor, error, retryInMs, log);
      return { outcome: 'retry_scheduled', error: error as Error };
    }
    const ended = await this.#rows.transition(
      { id: row.id, from: ['ending'] },
      { status: 'ended', endedAt: new Date() },
      { type: 'ended', actor, details: { reason: row.endReason } },
    );
    await this.#heartbeats.forget(row.id);
    if (ended) {
      const event = row.endReason === 'deleted' ? LogEvent.tunnelDeleted : LogEvent.tunnelReaped;
      log.info({ event, reason: row.endReason, hostname: row.hostname }, 'tunnel ended');
    }
    return { outcome: 'ended' };
  }

  async #insertWithSlug(ownerId: string, slug: string, port: number): Promise<Tunnel> {
    try {
      return await this.#insert(ownerId, slug, port);
    } catch (error) {
      if (isUniqueViolation(error, LIVE_SLUG_INDEX)) throw new AppError('TUNNEL_SLUG_CONFLICT');
      throw error;
    }
  }

  async #insertWithRandomSlug(ownerId: string, port: number): Promise<Tunnel> {
    for (let attempt = 0; attempt < RANDOM_SLUG_ATTEMPTS; attempt++) {
      const slug = this.#randomSlug();
      if (this.#config.tunnels.reservedSlugs.has(slug)) continue;
      try {
        return await this.#insert(ownerId, slug, port);
      } catch (error) {
        if (!isUniqueViolation(error, LIVE_SLUG_INDEX)) throw error;
      }
    }
    throw new AppError('SLUG_EXHAUSTED');
  }

  /** Inserts a `creating` row, counting the user's live tunnels under a per-user lock. */
  async #insert(ownerId: string, slug: string, port: number): Promise<Tunnel> {
    const { maxPerUser, domain } = this.#config.tunnels;
    const row = await this.#rows.insertLive({ id: randomUUID(), ownerId, slug, hostname: `${slug}.${domain}`, port }, maxPerUser);
    if (!row) throw new AppError('TUNNEL_LIMIT_EXCEEDED', { details: { limit: maxPerUser } });
    return row;
  }

  /** Removes whatever this create made upstream, and frees the slug and quota. */
  async #rollBackCreate(
    row: Tunnel,
    cfTunnelId: string | null,
    dnsRecordId: string | null,
    log: Logger,
    why: { actor: Actor; details: Prisma.InputJsonObject; nothingUpstream?: boolean },
  ): Promise<void> {
    const data = { status: 'ending', endReason: 'create_failed', cfTunnelId, dnsRecordId } as const;
    // Only leaving `creating` is an event; a row already ending was claimed by someone who recorded why.
    const ending = (await this.#rows.transition({ id: row.id, from: ['creating'] }, data, { type: 'create_failed', actor: why.actor, details: why.details }))
      ?? (await this.#prisma.tunnel.updateManyAndReturn({ where: { id: row.id, status: 'ending' }, data }))[0];
    log.warn({ event: LogEvent.tunnelCreateFailed }, 'create failed upstream; rolling back');
    if (!ending) return;
    if (why.nothingUpstream) {
      // Looking upstream by name would spend the request budget (or wait for it) to find nothing.
      await this.#rows.transition({ id: row.id, from: ['ending'] }, { status: 'ended', endedAt: new Date() }, {
        type: 'ended',
        actor: why.actor,
        details: { reason: 'create_failed', nothingUpstream: true },
      });
      await this.#heartbeats.forget(row.id);
      return;
    }
    await this.finishEnd(ending, log, why.actor);
  }

  /**
   * `end_failed`, unless the tunnel's latest event already says the same thing: an outage
   * fails every retry the same way, and the trail needs it once, not every few seconds.
   * Best effort: the failure is already logged, and auditing it must not change the outcome.
   */
  async #recordEndFailure(row: Tunnel, actor: Actor, error: unknown, retryInMs: number, log: Logger): Promise<void> {
    const failure = failureDetails(error);
    try {
      const latest = await this.#prisma.tunnelEvent.findFirst({ where: { tunnelId: row.id }, orderBy: { id: 'desc' }, select: { type: true, details: true } });
      const previous = (latest?.details as { error?: Record<string, unknown> } | null)?.error;
      if (latest?.type === 'end_failed' && previous?.operation === failure.operation && previous?.kind === failure.kind) return;
      await this.#prisma.tunnelEvent.create({
        data: { tunnelId: row.id, type: 'end_failed', actor, details: { reason: row.endReason, error: failure, retryInSeconds: Math.ceil(retryInMs / 1000) } },
      });
    } catch (auditError) {
      log.warn({ err: auditError }, 'could not record the end failure in the audit trail');
    }
  }

  #upstreamToAppError(error: unknown): unknown {
    if (!isUpstreamError(error)) return error;
    if (error.transient) {
      return new AppError('UPSTREAM_UNAVAILABLE', { retryAfterSec: error.retryAfterSec ?? 5, details: { operation: error.operation } });
    }
    return new AppError('UPSTREAM_ERROR', { details: { operation: error.operation } });
  }
}

/**
 * What of a failure the audit trail keeps forever: the upstream operation, the broker's kind,
 * the HTTP status and Cloudflare's codes. Other errors keep only their name: their messages
 * can carry anything (URLs, SQL), and the log line next to the event has the full story.
 */
function failureDetails(error: unknown): Prisma.InputJsonObject {
  if (isUpstreamError(error)) {
    return {
      operation: error.operation,
      kind: error.kind,
      ...(error.status !== undefined ? { status: error.status } : {}),
      ...(error.cloudflareCodes.length > 0 ? { cloudflareCodes: error.cloudflareCodes } : {}),
      ...(error.budgetExhausted ? { budgetExhausted: true } : {}),
    };
  }
  return { kind: 'internal', name: error instanceof Error ? error.name : typeof error };
}

function toDate(ms: number | null | undefined): Date | null {
  return ms === null || ms === undefined ? null : new Date(ms);
}
