import { setTimeout as sleep } from 'node:timers/promises';
import Cloudflare from 'cloudflare';
import type { CloudflareConfig } from '../config/env.js';
import { LogEvent, type Logger } from '../logging/logger.js';
import type { BudgetGate, BudgetPolicy } from './budget-gate.js';
import { isUpstreamError, translateUpstreamError, UpstreamError } from './upstream-error.js';

/** Per-call SDK options: here, the budget policy of the operation the call belongs to. */
type RequestOptions = Cloudflare.RequestOptions;

export const DEFAULT_CLOUDFLARE_BASE_URL = 'https://api.cloudflare.com/client/v4';
const CFARGOTUNNEL_SUFFIX = '.cfargotunnel.com';

export interface ProvisionedTunnel {
  cfTunnelId: string;
  token: string;
}

/**
 * Told about every upstream call (metrics). `outcome` is `ok`, `budget_exhausted` (refused by
 * the shared request budget, never sent) or the UpstreamError kind.
 */
export interface UpstreamCallObserver {
  upstreamCall(operation: string, outcome: string, durationSeconds: number): void;
}

/** What the broker knows about a tunnel's upstream resources; any id may be missing after a failure. */
export interface UpstreamTunnelRef {
  rowId: string;
  hostname: string;
  cfTunnelId: string | null;
  dnsRecordId: string | null;
}

/**
 * The longest wait before a retry, the SDK's or ours. Cloudflare answers a blocked account
 * with Retry-After: 300; sleeping that long inside a request (the SDK would, uncancellably)
 * helps nobody, so such an answer fails at once, as rate_limited with its Retry-After,
 * and the caller (the client of a create, the reaper for an end) comes back later.
 * TunnelService's lease arithmetic assumes at most this much per retry.
 */
export const MAX_RETRY_DELAY_MS = 10_000;

type Fetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/**
 * Builds the SDK client with every setting explicit: the SDK would otherwise read
 * CLOUDFLARE_* variables from the environment behind the config's back, retry
 * creates, and wait 60 s per attempt.
 *
 * With a `budget`, every HTTP request the SDK makes (each retry and each page included)
 * first passes the shared Cloudflare request budget. Without one the client is
 * unmetered, for tools that talk to Cloudflare outside the broker.
 *
 * The SDK's own retries (checked in cloudflare 7.3, src/client.ts makeRequest /
 * retryRequest / calculateDefaultRetryTimeoutMillis) cover connection errors, timeouts,
 * 408, 409, 429 and 5xx: exponential backoff from 0.5 s up to 8 s with up to 25 % jitter,
 * or exactly the server's retry-after / retry-after-ms when it sends one, and
 * `x-should-retry: false` on a response stops them. The broker relies on them only for
 * calls that are safe to repeat (GET, PUT, DELETE); creates pass maxRetries: 0 and are
 * retried by TunnelProvider, which adopts what an earlier attempt made.
 */
export function createCloudflareClient(config: CloudflareConfig, options: { budget?: BudgetGate; fetch?: Fetch } = {}): Cloudflare {
  const base = capRetryAfter(options.fetch ?? globalThis.fetch, MAX_RETRY_DELAY_MS);
  return new Cloudflare({
    apiToken: config.apiToken,
    apiKey: null,
    apiEmail: null,
    userServiceKey: null,
    baseURL: config.baseUrl ?? DEFAULT_CLOUDFLARE_BASE_URL,
    timeout: config.timeoutMs,
    maxRetries: config.maxRetries,
    fetch: options.budget ? options.budget.wrapFetch(base) : base,
    // The SDK's own logging can print request details; the broker logs upstream failures itself.
    logLevel: 'off',
  });
}

/** Marks a failed response whose Retry-After exceeds `maxMs` as not to be retried by the SDK. */
function capRetryAfter(fetch: Fetch, maxMs: number): Fetch {
  return async (input, init) => {
    const response = await fetch(input, init);
    if (response.ok) return response;
    const waitMs = retryAfterMs(response.headers);
    if (waitMs === undefined || waitMs <= maxMs) return response;
    const headers = new Headers(response.headers);
    headers.set('x-should-retry', 'false');
    return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
  };
}

/** The server's requested wait, read as the SDK reads it. */
function retryAfterMs(headers: Headers): number | undefined {
  const ms = Number.parseFloat(headers.get('retry-after-ms') ?? '');
  if (Number.isFinite(ms)) return ms;
  const value = headers.get('retry-after');
  if (!value) return undefined;
  const seconds = Number.parseFloat(value);
  if (Number.isFinite(seconds)) return seconds * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : date - Date.now();
}

/** First delay of our own create retries; doubles per retry up to MAX_CREATE_BACKOFF_MS. */
const CREATE_BACKOFF_BASE_MS = 500;
const MAX_CREATE_BACKOFF_MS = 8_000;
/**
 * A client is waiting on a create: a longer Retry-After is passed on to it (503 +
 * Retry-After) rather than slept through.
 */
export const MAX_CREATE_RETRY_AFTER_MS = 5_000;

/**
 * Delay before create retry number `retry` (0-based): Retry-After when given (plus up to
 * 10 % so that instances told the same instant spread out), else exponential backoff with
 * jitter (half to all of the step).
 */
function createRetryDelayMs(retry: number, retryAfterSec: number | undefined): number {
  if (retryAfterSec !== undefined) return retryAfterSec * 1000 * (1 + Math.random() * 0.1);
  const step = Math.min(CREATE_BACKOFF_BASE_MS * 2 ** retry, MAX_CREATE_BACKOFF_MS);
  return step * (0.5 + Math.random() * 0.5);
}

/** DNS names compare case-insensitively, with or without the root's trailing dot. */
function normalizeHost(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, '');
}

/**
 * A create failure that proves nothing was made: refused by the budget (never sent), or a
 * client-side refusal (4xx other than 408 timeout and 409 conflict). Timeouts, lost
 * connections and 5xx prove nothing: the create may have happened.
 */
function provesNothingCreated(error: UpstreamError): boolean {
  if (error.budgetExhausted) return true;
  const status = error.status;
  return status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 409;
}

/**
 * The broker's upstream operations on Cloudflare Tunnels and DNS.
 *
 * Contracts:
 * - Creates (POST) are never retried by the SDK, which would repeat them blindly. They are
 *   retried here instead (transient failures only, at most CLOUDFLARE_MAX_RETRIES times,
 *   backoff with jitter, Retry-After honoured) and every retry is safe: names are
 *   deterministic, so a tunnel that a lost or timed-out attempt made answers the retry
 *   with 409/1013 and is adopted (looked up by its exact name, token fetched), and a DNS
 *   record answers 400/81053 and is adopted if it is a CNAME to our tunnel. A record of
 *   that name that is anything else is someone else's: `dns_record_exists`, never retried.
 * - Reads, PUTs and deletes use the SDK's configured retries.
 * - With a BudgetGate, create-path calls fail fast when the shared request budget is
 *   spent (`rate_limited`, `budgetExhausted`, Retry-After = when a slot frees), while
 *   `teardown` waits its turn (bounded; then the same transient error).
 * - `teardown` is idempotent: anything already gone (404) counts as removed, and
 *   it finds resources by their deterministic name when an id was never stored.
 * - Every failure surfaces as an UpstreamError.
 */
export class TunnelProvider {
  readonly #client: Cloudflare;
  readonly #config: CloudflareConfig;
  readonly #log: Logger;
  readonly #budget: BudgetGate | undefined;
  readonly #observer: UpstreamCallObserver | undefined;

  /** `budget` must be the gate the client was built with; without one no policy applies. */
  constructor(client: Cloudflare, config: CloudflareConfig, logger: Logger, options: { budget?: BudgetGate; observer?: UpstreamCallObserver } = {}) {
    this.#client = client;
    this.#config = config;
    this.#log = logger;
    this.#budget = options.budget;
    this.#observer = options.observer;
  }

  /** Upstream tunnel names are `<prefix><row id>`: unique per row, and recognisably ours. */
  tunnelName(rowId: string): string {
    return `${this.#config.tunnelNamePrefix}${rowId}`;
  }

  /**
   * Creates the tunnel `<prefix><rowId>`, or adopts it if an earlier attempt made it.
   * If this throws with `nothingCreated`, no tunnel of that name can exist upstream.
   */
  async createTunnel(rowId: string): Promise<ProvisionedTunnel> {
    const budget = this.#budgetOptions('fail');
    const name = this.tunnelName(rowId);
    const created = await this.#createWithRetries('tunnel.create', async (): Promise<{ id: string; token?: string }> => {
      try {
        const tunnel = await this.#call('tunnel.create', () =>
          this.#client.zeroTrust.tunnels.cloudflared.create(
            { account_id: this.#config.accountId, name, config_src: 'cloudflare' },
            { ...budget, maxRetries: 0 },
          ),
        );
        if (!tunnel.id) throw new UpstreamError('failed', 'tunnel.create', undefined, [], undefined);
        // The live API returns the connector token on create (untyped in the SDK), which
        // saves a round trip; GET .../token is the fallback.
        const inline = (tunnel as { token?: unknown }).token;
        return typeof inline === 'string' && inline.length > 0 ? { id: tunnel.id, token: inline } : { id: tunnel.id };
      } catch (error) {
        if (!isUpstreamError(error) || error.kind !== 'tunnel_name_taken') throw error;
        // Only this row's create uses this name: an attempt whose answer was lost made it.
        const id = await this.#findTunnelId(rowId, budget);
        if (!id) {
          // Taken, yet not listed (deleted meanwhile, or the list lags): worth another try.
          throw new UpstreamError('unavailable', 'tunnel.create', error.status, error.cloudflareCodes, undefined, { cause: error });
        }
        this.#log.info({ event: LogEvent.upstreamAdopted, operation: 'tunnel.create', cfTunnelId: id }, 'adopted the tunnel an earlier attempt created');
        return { id };
      }
    });
    const token = created.token ?? (await this.getToken(created.id, budget));
    return { cfTunnelId: created.id, token };
  }

  async getToken(cfTunnelId: string, budget: RequestOptions = this.#budgetOptions('fail')): Promise<string> {
    const token = await this.#call('tunnel.token', () =>
      this.#client.zeroTrust.tunnels.cloudflared.token.get(cfTunnelId, { account_id: this.#config.accountId }, budget),
    );
    if (typeof token !== 'string' || token.length === 0) throw new UpstreamError('failed', 'tunnel.token', undefined, [], undefined);
    return token;
  }

  async configureIngress(cfTunnelId: string, hostname: string, port: number): Promise<void> {
    await this.#call('tunnel.configuration.put', () =>
      this.#client.zeroTrust.tunnels.cloudflared.configurations.update(cfTunnelId, {
        account_id: this.#config.accountId,
        config: {
          ingress: [
            { hostname, service: `http://localhost:${port}` },
            // cloudflared requires a catch-all last rule: no hostname. The SDK's type insists on
            // one, which the API itself does not.
            { service: 'http_status:404' } as { hostname: string; service: string },
          ],
        },
      }, this.#budgetOptions('fail')),
    );
  }

  /**
   * A proxied CNAME `<hostname> -> <tunnel id>.cfargotunnel.com`, or the one an earlier
   * attempt made; returns the record id. Any other record of that name is not ours: a
   * non-transient `dns_record_exists`.
   */
  createDnsRecord(hostname: string, cfTunnelId: string, rowId: string): Promise<string> {
    const budget = this.#budgetOptions('fail');
    return this.#createWithRetries('dns.create', async () => {
      try {
        const record = await this.#call('dns.create', () =>
          this.#client.dns.records.create(
            {
              zone_id: this.#config.zoneId,
              type: 'CNAME',
              name: hostname,
              content: `${cfTunnelId}${CFARGOTUNNEL_SUFFIX}`,
              proxied: true,
              ttl: 1,
              comment: `tunnel-broker ${this.tunnelName(rowId)}`,
            },
            { ...budget, maxRetries: 0 },
          ),
        );
        if (!record.id) throw new UpstreamError('failed', 'dns.create', undefined, [], undefined);
        return record.id;
      } catch (error) {
        if (!isUpstreamError(error) || error.kind !== 'dns_record_exists') throw error;
        // Ours only if it points at this very tunnel, whose id is fresh: then an earlier
        // attempt whose answer was lost made it.
        const [ours] = await this.#findOurDnsRecordIds(hostname, cfTunnelId, budget);
        if (!ours) {
          this.#log.warn({ event: LogEvent.upstreamFailure, operation: 'dns.create', hostname }, 'the hostname already has a DNS record that is not ours');
          throw error;
        }
        this.#log.info({ event: LogEvent.upstreamAdopted, operation: 'dns.create', dnsRecordId: ours }, 'adopted the DNS record an earlier attempt created');
        return ours;
      }
    });
  }

  /**
   * Removes the DNS record, the connectors and the tunnel. Idempotent. When the request
   * budget is spent it waits its turn (bounded), then fails as `rate_limited`.
   */
  async teardown(ref: UpstreamTunnelRef): Promise<void> {
    // One deadline for every request of the teardown, however many it takes.
    const budget = this.#budgetOptions('wait');
    const cfTunnelId = ref.cfTunnelId ?? (await this.#findTunnelId(ref.rowId, budget));
    await Promise.all([
      this.#deleteDns(ref, cfTunnelId, budget),
      cfTunnelId ? this.#cleanupConnections(cfTunnelId, budget) : undefined,
    ]);
    if (cfTunnelId) await this.#deleteTunnel(cfTunnelId, budget);
  }

  async #deleteDns(ref: UpstreamTunnelRef, cfTunnelId: string | null, budget: RequestOptions): Promise<void> {
    if (ref.dnsRecordId) {
      await this.#ignoreNotFound(this.#call('dns.delete', () =>
        this.#client.dns.records.delete(ref.dnsRecordId!, { zone_id: this.#config.zoneId }, budget),
      ));
      return;
    }
    // The id was never stored (the create failed or its response was lost): find the
    // record by name, and delete it only if it points at this very tunnel.
    if (!cfTunnelId) return;
    const ids = await this.#findOurDnsRecordIds(ref.hostname, cfTunnelId, budget);
    for (const id of ids) {
      await this.#ignoreNotFound(this.#call('dns.delete', () => this.#client.dns.records.delete(id, { zone_id: this.#config.zoneId }, budget)));
    }
  }

  async #cleanupConnections(cfTunnelId: string, budget: RequestOptions): Promise<void> {
    await this.#ignoreNotFound(this.#call('tunnel.connections.delete', () =>
      this.#client.zeroTrust.tunnels.cloudflared.connections.delete(cfTunnelId, { account_id: this.#config.accountId }, budget),
    ));
  }

  async #deleteTunnel(cfTunnelId: string, budget: RequestOptions): Promise<void> {
    const remove = () => this.#ignoreNotFound(this.#call('tunnel.delete', () =>
      this.#client.zeroTrust.tunnels.cloudflared.delete(cfTunnelId, { account_id: this.#config.accountId }, budget),
    ));
    try {
      await remove();
    } catch (error) {
      // A connector reconnected between the cleanup and the delete: clean up once more.
      if (!(error instanceof UpstreamError) || error.kind !== 'tunnel_has_connections') throw error;
      await this.#cleanupConnections(cfTunnelId, budget);
      await remove();
    }
  }

  /** CNAMEs named exactly `hostname` that point at this tunnel: the only records that are ours. */
  async #findOurDnsRecordIds(hostname: string, cfTunnelId: string, budget: RequestOptions): Promise<string[]> {
    const target = normalizeHost(`${cfTunnelId}${CFARGOTUNNEL_SUFFIX}`);
    const ids: string[] = [];
    await this.#call('dns.list', async () => {
      for await (const record of this.#client.dns.records.list({ zone_id: this.#config.zoneId, type: 'CNAME', name: { exact: hostname } }, budget)) {
        if (record.id && record.type === 'CNAME' && typeof record.content === 'string' && normalizeHost(record.content) === target) ids.push(record.id);
      }
    });
    return ids;
  }

  async #findTunnelId(rowId: string, budget: RequestOptions): Promise<string | null> {
    const name = this.tunnelName(rowId);
    return this.#call('tunnel.list', async () => {
      for await (const tunnel of this.#client.zeroTrust.tunnels.cloudflared.list({ account_id: this.#config.accountId, name, is_deleted: false }, budget)) {
        if (tunnel.name === name && tunnel.id && !tunnel.deleted_at) return tunnel.id;
      }
      return null;
    });
  }

  /** SDK options that put one operation's requests under the budget `policy` (none without a budget). */
  #budgetOptions(policy: BudgetPolicy): RequestOptions {
    // The gate's fetchOptions hold only its own symbol-keyed field, which the SDK's type
    // (RequestInit fields) cannot name; the SDK passes it through to the gate's fetch.
    return this.#budget ? (this.#budget.requestOptions(policy) as RequestOptions) : {};
  }

  /**
   * Our own retries of a create whose `attempt` adopts on conflict, so repeating it is safe.
   * Retries transient failures only, at most CLOUDFLARE_MAX_RETRIES times; a spent budget
   * or a Retry-After beyond MAX_CREATE_RETRY_AFTER_MS fails at once. The final error carries
   * `nothingCreated` when no attempt can have made anything.
   */
  async #createWithRetries<T>(operation: string, attempt: () => Promise<T>): Promise<T> {
    const maxRetries = this.#config.maxRetries;
    let mayHaveCreated = false;
    for (let retry = 0; retry <= maxRetries; retry++) {
      let failure: UpstreamError;
      try {
        return await attempt();
      } catch (error) {
        failure = translateUpstreamError(operation, error);
      }
      mayHaveCreated ||= !provesNothingCreated(failure);
      const retryable = retry < maxRetries && failure.transient && !failure.budgetExhausted
        && (failure.retryAfterSec ?? 0) * 1000 <= MAX_CREATE_RETRY_AFTER_MS;
      if (!retryable) {
        if (mayHaveCreated) throw failure;
        throw new UpstreamError(failure.kind, failure.operation, failure.status, failure.cloudflareCodes, failure.retryAfterSec, {
          cause: failure.cause,
          budgetExhausted: failure.budgetExhausted,
          nothingCreated: true,
        });
      }
      const delayMs = createRetryDelayMs(retry, failure.retryAfterSec);
      this.#log.info({ event: LogEvent.upstreamRetry, operation, retry: retry + 1, maxRetries, delayMs: Math.round(delayMs), kind: failure.kind }, 'retrying create');
      await sleep(delayMs);
    }
    throw new Error(`${operation}: retry loop ended without an outcome`);
  }

  async #ignoreNotFound(promise: Promise<unknown>): Promise<void> {
    try {
      await promise;
    } catch (error) {
      if (error instanceof UpstreamError && error.kind === 'not_found') return;
      throw error;
    }
  }

  /** Every SDK call goes through here: the one place upstream failures are translated, logged and measured. */
  async #call<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      const result = await fn();
      this.#observer?.upstreamCall(operation, 'ok', (performance.now() - started) / 1000);
      return result;
    } catch (error) {
      const upstream = translateUpstreamError(operation, error);
      this.#observer?.upstreamCall(operation, upstream.budgetExhausted ? 'budget_exhausted' : upstream.kind, (performance.now() - started) / 1000);
      if (upstream.kind !== 'not_found') {
        this.#log.warn(
          { event: LogEvent.upstreamFailure, operation, kind: upstream.kind, status: upstream.status, cloudflareCodes: upstream.cloudflareCodes },
          upstream.message,
        );
      }
      throw upstream;
    }
  }

  /**
   * Every tunnel not deleted whose name starts with the prefix, every page of it. The
   * filter is upstream's; callers still check each name, since a prefix match alone does
   * not make a tunnel ours.
   *
   * This and the other reconciliation methods below are housekeeping: when the request
   * budget is spent they fail at once (`rate_limited`) rather than wait, and they never
   * use the share of the budget kept for teardowns.
   */
  async listTunnelsUnderPrefix(options: { perPage?: number } = {}): Promise<ListedTunnel[]> {
    const tunnels = new Map<string, ListedTunnel>();
    await this.#call('tunnel.list', async () => {
      let seen = 0;
      const pages = this.#client.zeroTrust.tunnels.cloudflared.list({
        account_id: this.#config.accountId,
        include_prefix: this.#config.tunnelNamePrefix,
        is_deleted: false,
        per_page: options.perPage ?? LIST_PER_PAGE,
      }, this.#budgetOptions('fail'));
      for await (const tunnel of pages) {
        this.#checkListBound('tunnel.list', ++seen);
        if (!tunnel.id || typeof tunnel.name !== 'string' || tunnel.deleted_at) continue;
        // Pages shift when tunnels are deleted mid-listing; the id keeps each one once.
        tunnels.set(tunnel.id, { id: tunnel.id, name: tunnel.name, createdAt: tunnel.created_at ?? null });
      }
    });
    return [...tunnels.values()];
  }

  /** CNAMEs under `.<domain>` whose content ends in .cfargotunnel.com, every page of them. */
  async listTunnelDnsRecords(domain: string, options: { perPage?: number } = {}): Promise<ListedDnsRecord[]> {
    const records = new Map<string, ListedDnsRecord>();
    await this.#call('dns.list', async () => {
      let seen = 0;
      const pages = this.#client.dns.records.list({
        zone_id: this.#config.zoneId,
        type: 'CNAME',
        name: { endswith: `.${domain}` },
        content: { endswith: CFARGOTUNNEL_SUFFIX },
        per_page: options.perPage ?? LIST_PER_PAGE,
      }, this.#budgetOptions('fail'));
      for await (const record of pages) {
        this.#checkListBound('dns.list', ++seen);
        if (!record.id || typeof record.name !== 'string') continue;
        records.set(record.id, {
          id: record.id,
          name: record.name,
          type: record.type,
          content: typeof record.content === 'string' ? record.content : '',
          createdOn: record.created_on ?? null,
          comment: typeof record.comment === 'string' && record.comment !== '' ? record.comment : null,
        });
      }
    });
    return [...records.values()];
  }

  /** Cleans up the tunnel's connections, then deletes it. Already gone (404) counts as done. */
  async deleteTunnelById(cfTunnelId: string): Promise<void> {
    const budget = this.#budgetOptions('fail');
    await this.#cleanupConnections(cfTunnelId, budget);
    await this.#deleteTunnel(cfTunnelId, budget);
  }

  /** Already gone (404) counts as done. */
  deleteDnsRecordById(recordId: string): Promise<void> {
    return this.#ignoreNotFound(this.#call('dns.delete', () =>
      this.#client.dns.records.delete(recordId, { zone_id: this.#config.zoneId }, this.#budgetOptions('fail'))));
  }

  /** An API that ignored `page` would repeat one page forever; a listing this long is refused instead. */
  #checkListBound(operation: string, seen: number): void {
    if (seen > MAX_LISTED_ITEMS) {
      throw new UpstreamError('failed', operation, undefined, [], undefined, {
        cause: new Error(`more than ${MAX_LISTED_ITEMS} items listed; pagination is not advancing`),
      });
    }
  }
}

/** Cloudflare's largest page for cfd_tunnel lists; DNS accepts it too. */
const LIST_PER_PAGE = 1000;
/** Far above an account's 1000 tunnels or a zone's records; only a broken paginator gets here. */
const MAX_LISTED_ITEMS = 100_000;

/** A tunnel as a list shows it. */
export interface ListedTunnel {
  id: string;
  name: string;
  /** ISO 8601, as upstream reported it; null if it did not. */
  createdAt: string | null;
}

/** A DNS record as a list shows it. */
export interface ListedDnsRecord {
  id: string;
  name: string;
  type: string;
  content: string;
  /** ISO 8601, as upstream reported it; null if it did not. */
  createdOn: string | null;
  /** The record's comment (createDnsRecord writes `tunnel-broker <tunnel name>`); null if none. */
  comment: string | null;
}
