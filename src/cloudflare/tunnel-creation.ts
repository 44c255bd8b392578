import { setTimeout as sleep } from 'node:timers/promises';
import type { CloudflareConfig } from '../config/env.js';
import { LogEvent } from '../logging/logger.js';
import { dnsRecordMark, type TunnelLookups, tunnelName } from './tunnel-lookups.js';
import { CFARGOTUNNEL_SUFFIX, type RequestOptions, type UpstreamCalls } from './upstream-calls.js';
import { isUpstreamError, translateUpstreamError, UpstreamError } from './upstream-error.js';

export interface ProvisionedTunnel {
  cfTunnelId: string;
  token: string;
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
 * Cloudflare's documented limit of tunnels per account ("Cloudflare Tunnel: tunnels per
 * account 1,000", developers.cloudflare.com/cloudflare-one/account-limits/). No error code for
 * reaching it is documented (searched: the API docs, cloudflared, cloudflare-go, the SDKs and
 * their issues), so a refused create is recognised by counting, not by a code.
 */
export const CLOUDFLARE_TUNNELS_PER_ACCOUNT = 1_000;

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
 * The create path upstream: the tunnel, its token, its ingress and its DNS record.
 *
 * Contracts:
 * - Creates (POST) are never retried by the SDK, which would repeat them blindly. They are
 *   retried here instead (transient failures only, at most CLOUDFLARE_MAX_RETRIES times,
 *   backoff with jitter, Retry-After honoured) and every retry is safe: names are
 *   deterministic, so a tunnel that a lost or timed-out attempt made answers the retry
 *   with 409/1013 and is adopted (looked up by its exact name, token fetched), and a DNS
 *   record answers 400/81053 and is adopted if it is a CNAME to our tunnel. A record of
 *   that name that is anything else is someone else's: `dns_record_exists`, never retried.
 * - With a BudgetGate, every call fails fast when the shared request budget is spent
 *   (`rate_limited`, `budgetExhausted`, Retry-After = when a slot frees).
 * - Every failure surfaces as an UpstreamError.
 */
/** Upstream requests of a create that goes well: the tunnel (its token comes inline), its DNS record and its ingress. */
export const CREATE_UPSTREAM_CALLS = 3;

export class TunnelCreation {
  readonly #calls: UpstreamCalls;
  readonly #lookups: TunnelLookups;
  readonly #config: CloudflareConfig;

  constructor(calls: UpstreamCalls, lookups: TunnelLookups, config: CloudflareConfig) {
    this.#calls = calls;
    this.#lookups = lookups;
    this.#config = config;
  }

  /**
   * The request budget of one create, shared by its tunnel, DNS record and ingress calls:
   * its first request takes the slots of all three in one Redis call (see BudgetGate), so
   * the calls that follow it go out without a round trip to Redis of their own.
   */
  createBudget(): RequestOptions {
    return this.#calls.budgetOptions('fail', { prepay: CREATE_UPSTREAM_CALLS });
  }

  /**
   * Creates the tunnel `<prefix><rowId>`, or adopts it if an earlier attempt made it.
   * If this throws with `nothingCreated`, no tunnel of that name can exist upstream.
   */
  async createTunnel(rowId: string, budget: RequestOptions = this.#calls.budgetOptions('fail')): Promise<ProvisionedTunnel> {
    const name = tunnelName(this.#config, rowId);
    const created = await this.createWithRetries('tunnel.create', async (): Promise<{ id: string; token?: string }> => {
      try {
        const tunnel = await this.#calls.call('tunnel.create', () =>
          this.#calls.client.zeroTrust.tunnels.cloudflared.create(
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
        if (isUpstreamError(error) && error.kind === 'failed' && provesNothingCreated(error)) throw await this.#fullOr(error, budget);
        if (!isUpstreamError(error) || error.kind !== 'tunnel_name_taken') throw error;
        // Only this row's create uses this name: an attempt whose answer was lost made it.
        const id = await this.#lookups.findTunnelId(rowId, budget);
        if (!id) {
          // Taken, yet not listed (deleted meanwhile, or the list lags): worth another try.
          throw new UpstreamError('unavailable', 'tunnel.create', error.status, error.cloudflareCodes, undefined, { cause: error });
        }
        this.#calls.log.info({ event: LogEvent.upstreamAdopted, operation: 'tunnel.create', cfTunnelId: id }, 'adopted the tunnel an earlier attempt created');
        return { id };
      }
    });
    const token = created.token ?? (await this.getToken(created.id, budget));
    return { cfTunnelId: created.id, token };
  }

  /**
   * A create Cloudflare refused for a reason the broker does not recognise: if the account
   * now holds as many tunnels as it may (the broker's own count can miss tunnels made by
   * others in the same account), it is full, and the client is told so (503, retry later);
   * otherwise the refusal stands. One extra list call, only on such a refusal.
   */
  async #fullOr(error: UpstreamError, budget: RequestOptions): Promise<UpstreamError> {
    const capacity = Math.min(CLOUDFLARE_TUNNELS_PER_ACCOUNT, ...this.#config.accounts.filter((a) => a.accountId === this.#config.accountId).map((a) => a.maxTunnels));
    const held = await this.#lookups.countTunnels(budget).catch(() => null);
    if (held === null || held < capacity) return error;
    return new UpstreamError('account_full', error.operation, error.status, error.cloudflareCodes, undefined, { cause: error, nothingCreated: true });
  }

  async getToken(cfTunnelId: string, budget: RequestOptions = this.#calls.budgetOptions('fail')): Promise<string> {
    const token = await this.#calls.call('tunnel.token', () =>
      this.#calls.client.zeroTrust.tunnels.cloudflared.token.get(cfTunnelId, { account_id: this.#config.accountId }, budget),
    );
    if (typeof token !== 'string' || token.length === 0) throw new UpstreamError('failed', 'tunnel.token', undefined, [], undefined);
    return token;
  }

  async configureIngress(cfTunnelId: string, hostname: string, port: number, budget: RequestOptions = this.#calls.budgetOptions('fail')): Promise<void> {
    await this.#calls.call('tunnel.configuration.put', () =>
      this.#calls.client.zeroTrust.tunnels.cloudflared.configurations.update(cfTunnelId, {
        account_id: this.#config.accountId,
        config: {
          ingress: [
            { hostname, service: `http://localhost:${port}` },
            // cloudflared requires a catch-all last rule: no hostname. The SDK's type insists on
            // one, which the API itself does not.
            { service: 'http_status:404' } as { hostname: string; service: string },
          ],
        },
      }, budget),
    );
  }

  /**
   * A proxied CNAME `<hostname> -> <tunnel id>.cfargotunnel.com`, or the one an earlier
   * attempt made; returns the record id. Any other record of that name is not ours: a
   * non-transient `dns_record_exists`.
   */
  createDnsRecord(hostname: string, cfTunnelId: string, rowId: string, budget: RequestOptions = this.#calls.budgetOptions('fail')): Promise<string> {
    return this.createWithRetries('dns.create', async () => {
      try {
        const record = await this.#calls.call('dns.create', () =>
          this.#calls.client.dns.records.create(
            {
              zone_id: this.#config.zoneId,
              type: 'CNAME',
              name: hostname,
              content: `${cfTunnelId}${CFARGOTUNNEL_SUFFIX}`,
              proxied: true,
              ttl: 1,
              comment: dnsRecordMark(this.#config, rowId),
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
        const [ours] = await this.#lookups.findOurDnsRecordIds(hostname, cfTunnelId, budget);
        if (!ours) {
          this.#calls.log.warn({ event: LogEvent.upstreamFailure, operation: 'dns.create', hostname }, 'the hostname already has a DNS record that is not ours');
          throw error;
        }
        this.#calls.log.info({ event: LogEvent.upstreamAdopted, operation: 'dns.create', dnsRecordId: ours }, 'adopted the DNS record an earlier attempt created');
        return ours;
      }
    });
  }

  /**
   * Our own retries of a create whose `attempt` adopts on conflict, so repeating it is safe.
   * Retries transient failures only, at most CLOUDFLARE_MAX_RETRIES times; a spent budget
   * or a Retry-After beyond MAX_CREATE_RETRY_AFTER_MS fails at once. The final error carries
   * `nothingCreated` when no attempt can have made anything. Shared with the Access
   * gates (AccessGates), whose creates adopt by name the same way.
   */
  async createWithRetries<T>(operation: string, attempt: () => Promise<T>): Promise<T> {
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
      this.#calls.log.info({ event: LogEvent.upstreamRetry, operation, retry: retry + 1, maxRetries, delayMs: Math.round(delayMs), kind: failure.kind }, 'retrying create');
      await sleep(delayMs);
    }
    throw new Error(`${operation}: retry loop ended without an outcome`);
  }
}
