import { randomUUID } from 'node:crypto';
import type { Config } from '../config/env.js';
import type { CloudflareAccounts } from '../cloudflare/cloudflare-accounts.js';
import { isUpstreamError, type UpstreamError } from '../cloudflare/upstream-error.js';
import { isUniqueViolation } from '../db/database-error.js';
import { AppError, UPSTREAM_FAILURE_MESSAGES } from '../errors/catalogue.js';
import type { Prisma, PrismaClient, Tunnel, TunnelEndReason, TunnelEvent } from '../generated/prisma/client.js';
import { LogEvent, type Logger } from '../logging/logger.js';
import { HeartbeatRateExceededError, HeartbeatStateLostError, type HeartbeatStore, type RestoreEntry } from './heartbeat-store.js';
import { normalizeRequestedSlug, RANDOM_SLUG_ATTEMPTS, randomSlug as defaultRandomSlug } from './slug.js';
import { type Actor, MAX_EVENTS_PER_TUNNEL, userActor } from './tunnel-events.js';
import { CHECK_BACK_SLACK_MS, LeaseLostError, TunnelLease, type TunnelLeaseDeps } from './tunnel-lease.js';
import { AccountsFullError, TunnelRows } from './tunnel-rows.js';
import { type MadeUpstream, rowAccess as rowAccessOf, TunnelTeardown } from './tunnel-teardown.js';
import { accessColumns, type AccessRequest, resolveAccess } from './tunnel-access.js';
import type { GateIds } from '../cloudflare/access-gates.js';

const LIVE_SLUG_INDEX = 'tunnels_live_slug_key';
/** After a failed upstream teardown, the reaper tries again this many sweeps later (or after Retry-After). */
export const END_RETRY_SWEEPS = 3;
const RESTORE_PAGE_SIZE = 1000;
/** How long an audience change holds its tunnel against another change, at most (released when done). */
const ACCESS_CHANGE_LOCK_MS = 60_000;
/** Rows found abandoned (creating/ending with a lapsed lease and nobody due to look) per sweep. */
const ABANDONED_PAGE_SIZE = 1000;

export interface CreateTunnelInput {
  port: number;
  requestedSlug?: string | undefined;
  /** Who may open the URL; the operator's default when absent. */
  access?: AccessRequest | undefined;
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

/**
 * What became of a due tunnel the reaper looked at: `busy` when someone else holds its lease
 * (it comes due again when that lease would lapse), `lease_lost` when this process's lease
 * was taken over mid-teardown (the new holder finishes).
 */
export type EndOutcome = 'ended' | 'retry_scheduled' | 'not_found' | 'busy' | 'lease_lost';

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
  /** Every Cloudflare account: a create picks one with room, and everything later uses the row's. */
  accounts: CloudflareAccounts;
  config: Pick<Config, 'tunnels' | 'reaper' | 'access'>;
  logger: Logger;
  /** Injectable for tests that need to exhaust the slug space. */
  randomSlug?: () => string;
}

/** A DELETE was recorded while this create ran: the create undid itself. */
class DeletedDuringCreateError extends Error {
  constructor() {
    super('The tunnel was deleted while it was being created.');
    this.name = 'DeletedDuringCreateError';
  }
}

/**
 * The tunnel lifecycle: creating -> active -> ending -> ended.
 *
 * Invariants, and who enforces them:
 * - At most MAX_TUNNELS_PER_USER tunnels not ended per user: a per-user advisory
 *   lock held by the inserting statement, so concurrent creates count in turn.
 * - One tunnel that is not ended per slug: the partial unique index tunnels_live_slug_key.
 * - One owner per teardown: work on a `creating` or `ending` row is done by the holder of
 *   its lease (TunnelLease), short and renewed while the work goes on; everyone else defers.
 *   A DELETE takes the lease of an active tunnel; a DELETE of a tunnel being created is
 *   recorded, and the create undoes itself; a DELETE of one already ending sends nothing
 *   upstream. The reaper takes over a lapsed heartbeat, or a lease whose holder died.
 * - Fencing: every write of a holder is conditional on its lease generation, which grows
 *   with every takeover, so a holder that lost its lease cannot write afterwards.
 */
export class TunnelService {
  readonly #prisma: PrismaClient;
  readonly #rows: TunnelRows;
  readonly #heartbeats: HeartbeatStore;
  readonly #accounts: CloudflareAccounts;
  readonly #teardown: TunnelTeardown;
  readonly #config: TunnelServiceDeps['config'];
  readonly #log: Logger;
  readonly #randomSlug: () => string;
  readonly #leaseDeps: TunnelLeaseDeps;
  #restoring: Promise<'intact' | 'rebuilt' | 'busy'> | undefined;
  /** How long a lease lasts without renewal (TUNNEL_LEASE_SECONDS); its holder renews it every third of that. */
  readonly leaseMs: number;

  constructor(deps: TunnelServiceDeps) {
    this.#prisma = deps.prisma;
    this.#rows = new TunnelRows(deps.prisma);
    this.#heartbeats = deps.heartbeats;
    this.#accounts = deps.accounts;
    this.#teardown = new TunnelTeardown(deps.accounts, this.#rows);
    this.#config = deps.config;
    this.#log = deps.logger;
    this.#randomSlug = deps.randomSlug ?? defaultRandomSlug;
    this.leaseMs = deps.config.tunnels.leaseSeconds * 1000;
    this.#leaseDeps = { rows: this.#rows, heartbeats: deps.heartbeats, leaseMs: this.leaseMs, logger: deps.logger };
  }

  async create(ownerId: string, input: CreateTunnelInput, log: Logger = this.#log, options: { ownerEmail?: string | undefined } = {}): Promise<CreatedTunnel> {
    if (!Number.isInteger(input.port) || input.port < 1 || input.port > 65_535) throw new AppError('INVALID_PORT');
    const access = resolveAccess(input.access, this.#config.access, options.ownerEmail);
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

    const acquiredAt = performance.now();
    const row = requested !== undefined ? await this.#insertWithSlug(ownerId, requested, input.port) : await this.#insertWithRandomSlug(ownerId, input.port);
    const tunnelLog = log.child({ tunnelId: row.id });
    // This create holds the row's first lease. If this process dies, the tunnel comes due
    // shortly after the lease lapses, and a reaper rolls the create back.
    const lease = new TunnelLease(this.#leaseDeps, row.id, row.leaseGeneration, acquiredAt);
    const made: MadeUpstream = {};
    // The tunnel, its DNS record and its Access objects all go to the account the row was
    // placed in: Cloudflare routes a cfargotunnel.com CNAME only to a tunnel of the zone's own account.
    const provider = this.#accounts.forRow(row).provider;
    const gates = provider.access;
    let activated = false;
    try {
      // The audience is on the row before anything is made upstream, so whoever tears it
      // down knows whether to look for Access objects. Public is the column's default.
      if (access.mode !== 'public' && !(await this.#rows.saveUpstreamIds(row.id, row.leaseGeneration, { access: accessColumns(access) }))) throw new LeaseLostError();
      lease.start();
      // The Redis check-back goes out with the first upstream calls, not before them (one
      // round trip less on every create). If this process dies before it lands, the row is
      // still found: the reaper's sweep for rows left `creating` past their lease
      // (recoverAbandoned) makes it due, and the teardown finds what was made by name.
      // The gate (Access) is made alongside the tunnel, and both before the DNS record: the
      // hostname never resolves without its gate. The critical path stays two round trips.
      const upstreamBudget = provider.creation.createBudget();
      const [checkBack, tunnelResult, gateResult] = await Promise.allSettled([
        lease.scheduleCheckBack(),
        provider.creation.createTunnel(row.id, upstreamBudget),
        gates.needsUpstream(access) ? gates.prepare(row.id, row.hostname, access, (ids) => noteGate(made, ids)) : Promise.resolve({}),
      ]);
      if (tunnelResult.status === 'fulfilled') made.cfTunnelId = tunnelResult.value.cfTunnelId;
      if (gateResult.status === 'rejected' && !(isUpstreamError(gateResult.reason) && gateResult.reason.nothingCreated)) made.gateUncertain = true;
      if (checkBack.status === 'rejected') throw checkBack.reason;
      if (tunnelResult.status === 'rejected') throw tunnelResult.reason;
      if (gateResult.status === 'rejected') throw gateResult.reason;
      const provisioned = tunnelResult.value;
      const prepared = gateResult.value;
      this.#assertCreateGoesOn(lease);
      // The ids are saved alongside the next steps (fenced, like every write of the holder),
      // so whoever takes over mid-create knows what exists without looking it up by name;
      // a takeover before the save lands finds them by name. A lost lease stops the create
      // before activation, and it removes by id what it made (TunnelTeardown.removeMade).
      // Independent steps run together: the critical path is two upstream round trips.
      const saved = { cfTunnelId: provisioned.cfTunnelId, ...(made.accessAppId ? { accessAppId: made.accessAppId } : {}), ...(made.accessPolicyId ? { accessPolicyId: made.accessPolicyId } : {}) };
      const [save, dns, ingress, gate] = await Promise.allSettled([
        this.#rows.saveUpstreamIds(row.id, lease.generation, saved),
        provider.creation.createDnsRecord(row.hostname, provisioned.cfTunnelId, row.id, upstreamBudget),
        provider.creation.configureIngress(provisioned.cfTunnelId, row.hostname, row.port, upstreamBudget),
        gates.finish(row.id, row.hostname, prepared),
      ]);
      if (dns.status === 'fulfilled') made.dnsRecordId = dns.value;
      if (save.status === 'rejected') throw save.reason;
      if (!save.value) throw new LeaseLostError();
      if (dns.status === 'rejected') throw dns.reason;
      if (ingress.status === 'rejected') throw ingress.reason;
      if (gate.status === 'rejected') throw gate.reason;
      // No renewal may land after this point: activation hands the row's Redis deadline to heartbeats.
      await lease.stop();
      const tunnel = await this.#rows.activate(
        row.id,
        lease.generation,
        { cfTunnelId: provisioned.cfTunnelId, dnsRecordId: made.dnsRecordId ?? null, accessAppId: made.accessAppId ?? null, accessPolicyId: made.accessPolicyId ?? null },
        {
          actor: userActor(ownerId),
          details: {
            hostname: row.hostname, port: row.port, cfTunnelId: provisioned.cfTunnelId, dnsRecordId: made.dnsRecordId ?? null,
            access: accessColumns(access), ...(made.accessAppId ? { accessAppId: made.accessAppId } : {}),
          },
        },
      );
      if (!tunnel) throw await this.#whyNotActivated(row.id, lease.generation);
      activated = true;
      const expiresAt = await this.#heartbeats.start(tunnel.id, ownerId);
      tunnelLog.info({ event: LogEvent.tunnelCreated, hostname: tunnel.hostname, port: tunnel.port }, 'tunnel created');
      return { tunnel, cloudflaredToken: provisioned.token, expiresAt: new Date(expiresAt) };
    } catch (error) {
      await lease.stop();
      // Active but not yet heartbeating (Redis failed): its check-back makes the reaper end it soon.
      if (activated) throw error;
      await this.#rollBackCreate(row, lease, made, error, tunnelLog, userActor(ownerId));
      throw this.#createError(error);
    }
  }

  /**
   * Changes a live tunnel's audience in place (PATCH), owner only. Upstream first (the
   * hostname stays gated throughout, see AccessGates.change), then the row and its
   * `access_changed` event in one statement. If upstream fails, whatever Access objects
   * exist now are recorded on the row, so its teardown removes them.
   */
  async changeAccess(ownerId: string, tunnelId: string, requested: AccessRequest, log: Logger = this.#log, options: { ownerEmail?: string | undefined } = {}): Promise<TunnelView> {
    const access = resolveAccess(requested, this.#config.access, options.ownerEmail);
    // One change at a time per tunnel: a change holds the active row's lease field (nothing
    // else uses it while a tunnel is active) until it is done, or ACCESS_CHANGE_LOCK_MS if its process dies.
    const row = await this.#rows.transition({ id: tunnelId, ownerId, from: ['active'], leaseFree: true }, { status: 'active', leaseMs: ACCESS_CHANGE_LOCK_MS }, null);
    if (!row) {
      const existing = await this.#prisma.tunnel.findFirst({ where: { id: tunnelId, ownerId, status: { not: 'ended' } }, select: { status: true } });
      if (!existing) throw new AppError('TUNNEL_NOT_FOUND');
      if (existing.status !== 'active') throw new AppError('TUNNEL_NOT_FOUND', { message: 'The tunnel is being created or ended; its audience can change once it is active.' });
      throw new AppError('SERVICE_UNAVAILABLE', { message: "Another change of this tunnel's audience is in progress; retry shortly.", retryAfterSec: 1 });
    }
    const provider = this.#accounts.forRow(row).provider;
    const current: GateIds = { appId: row.accessAppId ?? undefined, policyId: row.accessPolicyId ?? undefined };
    const known: GateIds = { ...current };
    let ids: GateIds;
    try {
      ids = await provider.access.change(row.id, row.hostname, current, access, (made) => {
        if (made.appId) known.appId = made.appId;
        if (made.policyId) known.policyId = made.policyId;
      });
    } catch (error) {
      await this.#rows.transition({ id: row.id, from: ['active'] }, { status: 'active', accessAppId: known.appId ?? null, accessPolicyId: known.policyId ?? null, leaseMs: null }, null)
        .catch((dbError: unknown) => log.warn({ err: dbError }, 'could not record the Access objects of a failed change; the reconciler finds them by name'));
      throw upstreamAppError(error, UPSTREAM_FAILURE_MESSAGES.access);
    }
    const updated = await this.#rows.transition(
      { id: row.id, ownerId, from: ['active'] },
      { status: 'active', access: accessColumns(access), accessAppId: ids.appId ?? null, accessPolicyId: ids.policyId ?? null, leaseMs: null },
      { type: 'access_changed', actor: userActor(ownerId), details: { from: accessColumns(rowAccessOf(row)), to: accessColumns(access) } },
    );
    if (!updated) {
      // It began ending meanwhile, and its teardown may have read the ids from before.
      await provider.access.remove(ids, provider.teardownBudget()).catch((removeError: unknown) => {
        log.warn({ err: removeError }, 'could not remove the Access objects of a tunnel that ended during a change');
      });
      throw new AppError('TUNNEL_NOT_FOUND');
    }
    log.info({ event: LogEvent.tunnelAccessChanged, tunnelId: row.id, access: access.mode }, 'tunnel audience changed');
    const [deadline] = await this.#heartbeats.deadlines([row.id]);
    return { tunnel: updated, expiresAt: toDate(deadline) };
  }

  /** Between upstream steps: stop if the lease was lost or a DELETE was recorded. */
  #assertCreateGoesOn(lease: TunnelLease): void {
    lease.assertHeld();
    if (lease.deleteRequested) throw new DeletedDuringCreateError();
  }

  async #whyNotActivated(id: string, generation: number): Promise<Error> {
    const row = await this.#prisma.tunnel.findUnique({ where: { id }, select: { status: true, leaseGeneration: true, deleteRequestedAt: true } });
    if (row?.status === 'creating' && row.leaseGeneration === generation && row.deleteRequestedAt) return new DeletedDuringCreateError();
    return new LeaseLostError();
  }

  /**
   * Undoes a create that failed, was deleted meanwhile, or lost its lease. Whatever state the
   * row has moved to, what this create made upstream is removed: by the one teardown while
   * this create still holds the lease, else by id (see TunnelTeardown.removeMade).
   */
  async #rollBackCreate(row: Tunnel, lease: TunnelLease, made: MadeUpstream, error: unknown, log: Logger, actor: Actor): Promise<void> {
    const deleted = error instanceof DeletedDuringCreateError;
    const acquiredAt = performance.now();
    const ending = await this.#rows.transition(
      { id: row.id, from: ['creating'], generation: lease.generation },
      {
        status: 'ending', endReason: deleted ? 'deleted' : 'create_failed', cfTunnelId: made.cfTunnelId ?? null, dnsRecordId: made.dnsRecordId ?? null, leaseMs: this.leaseMs,
        accessAppId: made.accessAppId ?? null, accessPolicyId: made.accessPolicyId ?? null,
      },
      { type: 'create_failed', actor, details: deleted ? { reason: 'deleted_during_create' } : { error: failureDetails(error) } },
    ).catch((dbError: unknown) => {
      log.warn({ err: dbError }, 'could not record the failed create; its lease will lapse and the reaper rolls it back');
      return undefined;
    });
    if (!ending) {
      log.warn({ event: LogEvent.tunnelCreateFailed, err: error }, 'create lost its lease; removing what it made');
      await this.#teardown.removeMade(row, made).catch((removeError: unknown) => {
        log.warn({ err: removeError }, 'could not remove what the create made; the reaper or the reconciler will');
      });
      return;
    }
    log.warn({ event: LogEvent.tunnelCreateFailed, reason: deleted ? 'deleted_during_create' : 'upstream' }, 'create did not complete; rolling back');
    // Refused before anything could be made (the request budget was spent, or Cloudflare said
    // no outright): looking upstream by name would spend the budget to find nothing.
    const nothingUpstream = !made.cfTunnelId && !made.accessAppId && !made.accessPolicyId && !made.gateUncertain && isUpstreamError(error) && error.nothingCreated;
    const rollback = new TunnelLease(this.#leaseDeps, row.id, ending.leaseGeneration, acquiredAt);
    if (nothingUpstream) {
      await this.#markEnded(ending, rollback, actor, { reason: 'create_failed', nothingUpstream: true }, log);
      return;
    }
    await this.#finishEnd(ending, rollback.start(), log, actor);
  }

  /** Redis only: the hot path. */
  async heartbeat(ownerId: string, tunnelId: string): Promise<Date> {
    let deadline: number | null;
    try {
      deadline = await this.#heartbeats.touch(tunnelId, ownerId);
    } catch (error) {
      if (error instanceof HeartbeatRateExceededError) {
        throw new AppError('RATE_LIMITED', { message: 'Too many heartbeats for this tunnel; retry later.', retryAfterSec: Math.max(1, Math.ceil(error.retryAfterMs / 1000)) });
      }
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
   * Rows left `creating` or `ending` whose lease lapsed a while ago with nobody due to look
   * at them (their Redis check-back was lost, e.g. a crash between the insert and scheduling
   * it) are made due now, so the reaper takes them over. Cheap: an index range scan over the
   * few rows in those states.
   */
  async recoverAbandoned(): Promise<number> {
    const graceMs = this.leaseMs + CHECK_BACK_SLACK_MS + 2 * this.#config.reaper.intervalSeconds * 1000;
    const ids = await this.#rows.abandoned(graceMs, ABANDONED_PAGE_SIZE);
    for (const id of ids) await this.#heartbeats.scheduleEnd(id, 0);
    if (ids.length > 0) this.#log.warn({ event: LogEvent.tunnelRecovered, count: ids.length }, 'rows left creating/ending with a lapsed lease were made due');
    return ids.length;
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

  /** One tunnel by id, whatever its state, or the live one with that hostname or slug: what an operator names. */
  findForOperator(ref: { id: string } | { hostname: string } | { slug: string }): Promise<Tunnel | null> {
    if ('id' in ref) return this.#prisma.tunnel.findUnique({ where: { id: ref.id } });
    // A slug names one live tunnel across every account (tunnels_live_slug_key).
    if ('slug' in ref) return this.#prisma.tunnel.findFirst({ where: { slug: ref.slug, status: { not: 'ended' } } });
    return this.#prisma.tunnel.findFirst({ where: { hostname: ref.hostname, status: { not: 'ended' } } });
  }

  /**
   * Ends the caller's tunnel; idempotent. An active tunnel is taken (its lease, a new
   * generation) and torn down here; if Cloudflare fails, it stays `ending`, the reaper
   * retries, and the caller gets the upstream error. A tunnel still being created gets the
   * request recorded: its create undoes itself. A tunnel already ending or ended is left to
   * whoever holds it: nothing is sent upstream. `actor` is who asked: the owner by default,
   * or an operator.
   */
  async delete(ownerId: string, tunnelId: string, log: Logger = this.#log, actor: Actor = userActor(ownerId)): Promise<void> {
    const acquiredAt = performance.now();
    const taken = await this.#rows.transition(
      { id: tunnelId, ownerId, from: ['active'] },
      { status: 'ending', endReason: 'deleted', newGeneration: true, leaseMs: this.leaseMs },
      { type: 'delete_requested', actor },
    );
    if (!taken) {
      if (await this.#rows.requestDelete(tunnelId, ownerId, { type: 'delete_requested', actor })) return;
      const existing = await this.#prisma.tunnel.findFirst({ where: { id: tunnelId, ownerId }, select: { id: true } });
      if (!existing) throw new AppError('TUNNEL_NOT_FOUND');
      return;
    }
    const lease = new TunnelLease(this.#leaseDeps, taken.id, taken.leaseGeneration, acquiredAt);
    // Refuses heartbeats from now on, and brings the reaper here if this process dies.
    await lease.scheduleCheckBack();
    const outcome = await this.#finishEnd(taken, lease.start(), log.child({ tunnelId: taken.id }), actor);
    if (outcome.outcome === 'retry_scheduled') throw this.#endError(outcome.error);
  }

  /**
   * The reaper's entry point for a due tunnel it claimed in Redis: a lapsed heartbeat, or a
   * create or teardown whose lease lapsed (its holder died, or a failed teardown's retry
   * time came). Taking it over is one conditional statement; one process wins it.
   */
  async endDue(tunnelId: string, log: Logger = this.#log): Promise<EndOutcome> {
    const acquiredAt = performance.now();
    const result = await this.#rows.takeOver(tunnelId, this.leaseMs, { heartbeatTtlSeconds: this.#config.tunnels.ttlSeconds });
    if (!result.taken) {
      if ('retryInMs' in result) {
        // Someone is working on it: look again when their lease would lapse.
        await this.#heartbeats.scheduleEnd(tunnelId, result.retryInMs + CHECK_BACK_SLACK_MS);
        return 'busy';
      }
      await this.#heartbeats.forget(tunnelId);
      return 'not_found';
    }
    const { row } = result;
    if (result.previous !== 'ending') {
      // Debug: the reap's one info line is "tunnel ended" (or its failure), which names the reason.
      log.debug({ event: LogEvent.tunnelHeartbeatLapsed, tunnelId, userId: row.ownerId, reason: row.endReason }, 'tunnel due; ending it');
    }
    const lease = new TunnelLease(this.#leaseDeps, row.id, row.leaseGeneration, acquiredAt);
    await lease.scheduleCheckBack();
    const { outcome } = await this.#finishEnd(row, lease.start(), log.child({ tunnelId, userId: row.ownerId }), 'reaper');
    return outcome;
  }

  /**
   * The one teardown, by the holder of `lease`: upstream, then the row to `ended` and Redis
   * forgotten. On an upstream failure the lease is kept until the retry time (nobody takes
   * the work before then) and the reaper comes back then. `actor` is whoever is finishing
   * the end, for the audit trail.
   */
  async #finishEnd(row: Tunnel, lease: TunnelLease, log: Logger, actor: Actor): Promise<{ outcome: 'ended' | 'lease_lost' } | { outcome: 'retry_scheduled'; error: UpstreamError | Error }> {
    try {
      await this.#teardown.run(row, lease);
    } catch (error) {
      await lease.stop();
      if (error instanceof LeaseLostError) {
        log.warn({ event: LogEvent.tunnelEndFailed, reason: row.endReason }, 'lost the lease mid-teardown; its new holder finishes');
        return { outcome: 'lease_lost' };
      }
      const retryAfterMs = isUpstreamError(error) && error.retryAfterSec !== undefined ? error.retryAfterSec * 1000 : 0;
      const retryInMs = Math.max(END_RETRY_SWEEPS * this.#config.reaper.intervalSeconds * 1000, retryAfterMs);
      const kept = await this.#rows.transition({ id: row.id, from: ['ending'], generation: lease.generation }, { status: 'ending', leaseMs: retryInMs }, null);
      if (kept) await this.#heartbeats.scheduleEnd(row.id, retryInMs + CHECK_BACK_SLACK_MS);
      log.warn({ event: LogEvent.tunnelEndFailed, err: error, reason: row.endReason }, 'upstream teardown failed; will retry');
      await this.#recordEndFailure(row, actor, error, retryInMs, log);
      return { outcome: 'retry_scheduled', error: error as Error };
    }
    return this.#markEnded(row, lease, actor, { reason: row.endReason }, log);
  }

  /** Ending -> ended by the lease holder, and Redis forgotten. */
  async #markEnded(row: Tunnel, lease: TunnelLease, actor: Actor, details: Prisma.InputJsonObject, log: Logger): Promise<{ outcome: 'ended' | 'lease_lost' }> {
    await lease.stop();
    const ended = await this.#rows.transition(
      { id: row.id, from: ['ending'], generation: lease.generation },
      { status: 'ended', endedAt: new Date(), leaseMs: null },
      { type: 'ended', actor, details },
    );
    if (!ended) return { outcome: 'lease_lost' };
    await this.#heartbeats.forget(row.id);
    const event = row.endReason === 'deleted' ? LogEvent.tunnelDeleted : LogEvent.tunnelReaped;
    log.info({ event, reason: row.endReason, hostname: row.hostname }, 'tunnel ended');
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

  /**
   * Inserts a `creating` row in the least loaded Cloudflare account with room, counting the
   * user's live tunnels and each account's in the same statement (see TunnelRows.insertLive).
   */
  async #insert(ownerId: string, slug: string, port: number): Promise<Tunnel> {
    const { maxPerUser } = this.#config.tunnels;
    let row: Tunnel | undefined;
    try {
      row = await this.#rows.insertLive({ id: randomUUID(), ownerId, slug, port }, maxPerUser, this.leaseMs, await this.#accounts.placementForCreate());
    } catch (error) {
      if (error instanceof AccountsFullError) throw new AppError('TUNNEL_CAPACITY_EXHAUSTED', { retryAfterSec: this.capacityRetryAfterSec });
      throw error;
    }
    if (!row) throw new AppError('TUNNEL_LIMIT_EXCEEDED', { details: { limit: maxPerUser } });
    return row;
  }

  /**
   * Retry-After when every account is full: a slot frees when a tunnel is deleted (any time)
   * or reaped. A tunnel whose agent was already gone when the create was refused has been
   * reaped after at most one TTL plus one reaper sweep, so by then every slot that was going
   * to free by itself has; sooner would mostly meet the same refusal again.
   */
  get capacityRetryAfterSec(): number {
    return this.#config.tunnels.ttlSeconds + this.#config.reaper.intervalSeconds;
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

  /** What the client of a failed create is told: the create was rolled back. */
  #createError(error: unknown): unknown {
    if (error instanceof DeletedDuringCreateError) return new AppError('TUNNEL_DELETED_DURING_CREATE');
    if (error instanceof LeaseLostError) {
      return new AppError('UPSTREAM_UNAVAILABLE', { message: UPSTREAM_FAILURE_MESSAGES.create.UPSTREAM_UNAVAILABLE, retryAfterSec: 5 });
    }
    // Cloudflare refused because the account is full (tunnels made outside the broker count too).
    if (isUpstreamError(error) && error.kind === 'account_full') return new AppError('TUNNEL_CAPACITY_EXHAUSTED', { retryAfterSec: this.capacityRetryAfterSec });
    return upstreamAppError(error, UPSTREAM_FAILURE_MESSAGES.create);
  }

  /** What the client of a DELETE whose teardown failed is told: the tunnel stays ending, and the reaper retries. */
  #endError(error: unknown): unknown {
    return upstreamAppError(error, UPSTREAM_FAILURE_MESSAGES.delete);
  }
}

/** Records on `made` a gate object the create has just made (for its rollback). */
function noteGate(made: MadeUpstream, ids: GateIds): void {
  if (ids.appId) made.accessAppId = ids.appId;
  if (ids.policyId) made.accessPolicyId = ids.policyId;
}

/** An upstream failure as the API answers it, with the path's own message. */
function upstreamAppError(error: unknown, messages: { UPSTREAM_ERROR: string; UPSTREAM_UNAVAILABLE: string }): unknown {
  if (!isUpstreamError(error)) return error;
  if (error.transient) {
    return new AppError('UPSTREAM_UNAVAILABLE', { message: messages.UPSTREAM_UNAVAILABLE, retryAfterSec: error.retryAfterSec ?? 5, details: { operation: error.operation } });
  }
  return new AppError('UPSTREAM_ERROR', { message: messages.UPSTREAM_ERROR, details: { operation: error.operation } });
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
