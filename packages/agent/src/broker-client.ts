import type { ErrorCode } from '../errors/catalogue.js';

/** What POST /v1/tunnels answers (201). `heartbeatToken` is absent on brokers that predate it. */
export interface CreatedTunnel {
  tunnelId: string;
  hostname: string;
  url: string;
  slug: string;
  port: number;
  cloudflaredToken: string;
  heartbeatToken?: string;
  heartbeatIntervalSec: number;
  expiresAt: string;
  createdAt: string;
}

export interface TunnelSummary {
  id: string;
  hostname: string;
  slug: string;
  port: number;
  status: string;
  createdAt: string;
  expiresAt: string | null;
}

/**
 * Any failed call. `status` is absent when no HTTP answer came back (refused, reset, DNS,
 * timeout); `code` is the broker's error code when the body was one of its JSON errors.
 */
export class BrokerError extends Error {
  readonly status: number | undefined;
  readonly code: ErrorCode | string | undefined;
  readonly retryAfterSec: number | undefined;
  readonly details: Record<string, unknown> | undefined;
  /** No answer, and the connection was never made (refused, no such host): the broker cannot have seen the request. */
  readonly neverSent: boolean;

  constructor(
    message: string,
    init: { status?: number; code?: string; retryAfterSec?: number; details?: Record<string, unknown>; neverSent?: boolean; cause?: unknown } = {},
  ) {
    super(message, { cause: init.cause });
    this.name = 'BrokerError';
    this.status = init.status;
    this.code = init.code;
    this.retryAfterSec = init.retryAfterSec;
    this.details = init.details;
    this.neverSent = init.status === undefined && init.neverSent === true;
  }

  /** No answer at all: the broker may never have seen the request. */
  get unreachable(): boolean {
    return this.status === undefined;
  }

  /** No answer, but the broker may have received the request and acted on it (a timeout, a connection cut mid-request). */
  get answerLost(): boolean {
    return this.status === undefined && !this.neverSent;
  }

  /**
   * Worth retrying unchanged: no answer, a 5xx (the broker rolls back failed creates), or our
   * own earlier attempt still holding the Idempotency-Key. 429s are not: the caller decides
   * whether waiting Retry-After out is what the user wants.
   */
  get transient(): boolean {
    if (this.status === undefined) return true;
    if (this.status >= 500) return this.status !== 501;
    return this.code === 'IDEMPOTENCY_KEY_IN_USE';
  }

  /** The tunnel no longer exists for us (reaped, deleted elsewhere, or never ours). */
  get gone(): boolean {
    return this.status === 404 || this.status === 410;
  }
}

export interface BrokerClientOptions {
  baseUrl: string;
  accessToken: string;
  /** Per request; a hung broker must not hang the agent. */
  timeoutMs?: number;
  userAgent?: string;
}

export const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * How long one DELETE may take. Ending a tunnel on the broker can wait for a slot in its
 * shared Cloudflare request budget (up to MAX_BUDGET_WAIT_MS, 20 s, in
 * src/cloudflare/budget-gate.ts) before its teardown requests run (each bounded by the
 * broker's CLOUDFLARE_TIMEOUT_MS, 10 s by default): the agent waits for that answer rather
 * than give up on a teardown that is merely queued. Checked against the broker's constant by
 * test/agent/broker-client.test.ts.
 */
export const DELETE_TIMEOUT_MS = 40_000;

/** Connection errors that mean the request never left this machine (as opposed to a timeout or a reset). */
const NEVER_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

/** The broker's HTTP API, over node's fetch. No state beyond the options. */
export class BrokerClient {
  readonly baseUrl: string;
  readonly #accessToken: string;
  readonly #timeoutMs: number;
  readonly #userAgent: string;

  constructor(options: BrokerClientOptions) {
    // A trailing slash makes relative paths resolve under a path prefix (https://host/broker/).
    this.baseUrl = options.baseUrl.endsWith('/') ? options.baseUrl : `${options.baseUrl}/`;
    this.#accessToken = options.accessToken;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#userAgent = options.userAgent ?? `tunnel-broker-agent (node ${process.version})`;
  }

  async createTunnel(input: { port: number; slug?: string; idempotencyKey: string }, signal?: AbortSignal): Promise<CreatedTunnel> {
    const body: Record<string, unknown> = { port: input.port };
    if (input.slug !== undefined) body.requestedSlug = input.slug;
    const created = await this.#request<CreatedTunnel>('POST', 'v1/tunnels', { body, headers: { 'idempotency-key': input.idempotencyKey }, signal, expect: 201 });
    if (
      typeof created?.tunnelId !== 'string' || typeof created.hostname !== 'string' || typeof created.cloudflaredToken !== 'string' ||
      typeof created.heartbeatIntervalSec !== 'number' || !(created.heartbeatIntervalSec > 0)
    ) {
      throw new BrokerError('The broker answered the create with an unexpected body; is --server pointing at a tunnel broker?', { status: 201 });
    }
    return { ...created, url: typeof created.url === 'string' ? created.url : `https://${created.hostname}` };
  }

  /** `token` is the tunnel's heartbeat token when the broker issued one, else the access token. */
  /** The answer carries a fresh `heartbeatToken` when the one used is close to its expiry. */
  async heartbeat(tunnelId: string, token: string | undefined, signal?: AbortSignal): Promise<{ expiresAt: string; heartbeatToken?: string }> {
    return this.#request('POST', `v1/tunnels/${encodeURIComponent(tunnelId)}/heartbeat`, { token, signal, expect: 200 });
  }

  /**
   * `tunnel` is its id, hostname or slug (the broker resolves it). Waits at least
   * DELETE_TIMEOUT_MS for the answer (see there), unless told `timeoutMs`.
   */
  async deleteTunnel(tunnel: string, signal?: AbortSignal, timeoutMs?: number): Promise<void> {
    await this.#request('DELETE', `v1/tunnels/${encodeURIComponent(tunnel)}`, { signal, expect: 204, timeoutMs: timeoutMs ?? Math.max(this.#timeoutMs, DELETE_TIMEOUT_MS) });
  }

  /** One of the caller's live tunnels, by its id, hostname or slug (the broker resolves it). */
  async getTunnel(tunnel: string, signal?: AbortSignal): Promise<TunnelSummary> {
    const body = await this.#request<TunnelSummary>('GET', `v1/tunnels/${encodeURIComponent(tunnel)}`, { signal, expect: 200 });
    if (typeof body?.id !== 'string' || typeof body.hostname !== 'string') {
      throw new BrokerError('The broker answered with an unexpected body; is --server pointing at a tunnel broker?', { status: 200 });
    }
    return body;
  }

  async listTunnels(signal?: AbortSignal): Promise<TunnelSummary[]> {
    const body = await this.#request<{ tunnels: TunnelSummary[] }>('GET', 'v1/tunnels', { signal, expect: 200 });
    if (!Array.isArray(body?.tunnels)) throw new BrokerError('The broker answered the list with an unexpected body; is --server pointing at a tunnel broker?', { status: 200 });
    return body.tunnels;
  }

  async #request<T>(
    method: string,
    path: string,
    options: { body?: unknown; headers?: Record<string, string>; token?: string; signal?: AbortSignal | undefined; expect: number; timeoutMs?: number },
  ): Promise<T> {
    const url = new URL(path, this.baseUrl);
    const timeoutMs = Math.max(1, Math.round(options.timeoutMs ?? this.#timeoutMs));
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    let response: Response;
    try {
      response = await fetch(url, {
        method,
        headers: {
          authorization: `Bearer ${options.token ?? this.#accessToken}`,
          'user-agent': this.#userAgent,
          accept: 'application/json',
          ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...options.headers,
        },
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        signal,
        redirect: 'error',
      });
    } catch (error) {
      const timedOut = timeout.aborted && !options.signal?.aborted;
      const reason = timedOut ? `no answer within ${timeoutMs / 1000} s` : describeNetworkError(error);
      throw new BrokerError(`Cannot reach the broker at ${url.origin}: ${reason}`, { cause: error, neverSent: !timedOut && NEVER_SENT_CODES.has(errorCode(error) ?? '') });
    }
    let text: string;
    try {
      text = await response.text();
    } catch (error) {
      throw new BrokerError(`The connection to the broker at ${url.origin} broke mid-answer: ${describeNetworkError(error)}`, { cause: error });
    }
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (response.status === options.expect) return parsed as T;
    const err = (parsed ?? {}) as { code?: unknown; message?: unknown; details?: unknown };
    const retryAfter = Number(response.headers.get('retry-after'));
    throw new BrokerError(typeof err.message === 'string' ? err.message : `HTTP ${response.status} from ${url.origin}`, {
      status: response.status,
      code: typeof err.code === 'string' ? err.code : undefined,
      retryAfterSec: Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter : undefined,
      details: err.details && typeof err.details === 'object' ? (err.details as Record<string, unknown>) : undefined,
    });
  }
}

/** The first `code` (ECONNREFUSED, UND_ERR_SOCKET) down fetch's chain of causes. */
function errorCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current; depth++) {
    const e = current as { code?: unknown; cause?: unknown };
    if (typeof e.code === 'string') return e.code;
    current = e.cause;
  }
  return undefined;
}

/** fetch's own message is just "fetch failed"; the useful part (ECONNREFUSED, ENOTFOUND) is in the cause. */
function describeNetworkError(error: unknown): string {
  let current: unknown = error;
  let deepest = error instanceof Error ? error.message : String(error);
  for (let depth = 0; depth < 5 && current; depth++) {
    const e = current as { code?: unknown; message?: unknown; cause?: unknown };
    if (typeof e.code === 'string') return typeof e.message === 'string' && e.message ? e.message : e.code;
    if (typeof e.message === 'string' && e.message) deepest = e.message;
    current = e.cause;
  }
  return deepest;
}
