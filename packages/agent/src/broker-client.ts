import createClient, { type Client } from 'openapi-fetch';
import type { operations, paths } from './generated/openapi.js';

/**
 * The broker's API as the agent sees it: every type here is read from the OpenAPI document the
 * agent is generated from (packages/agent/openapi.json, written from the broker's route
 * schemas by `npm run openapi`), so a change to a response schema breaks this typecheck, not
 * the agent's users.
 */
type JsonOf<R> = R extends { content: { 'application/json': infer B } } ? B : never;
type Responses<O extends keyof operations> = operations[O]['responses'];
/** The JSON body an operation answers with, at one status. */
type Answer<O extends keyof operations, S extends keyof Responses<O>> = JsonOf<Responses<O>[S]>;
type ErrorCodeOf<O extends keyof operations> = {
  [S in keyof Responses<O>]: S extends 200 | 201 | 204 ? never : JsonOf<Responses<O>[S]> extends { code: infer C } ? C : never;
}[keyof Responses<O>];

/** Every error code an operation of the API can answer with. */
export type ErrorCode = { [O in keyof operations]: ErrorCodeOf<O> }[keyof operations];

/** What POST /v1/tunnels answers (201). `heartbeatToken` is absent on brokers that predate it. */
export type CreatedTunnel = Omit<Answer<'createTunnel', 201>, 'heartbeatToken'> & Partial<Pick<Answer<'createTunnel', 201>, 'heartbeatToken'>>;

/** One of GET /v1/tunnels's tunnels; GET /v1/tunnels/:tunnelId answers the same fields (and more). */
export type TunnelSummary = Answer<'listTunnels', 200>['tunnels'][number];

/** What a heartbeat answers: a fresh `heartbeatToken` when the one used is close to its expiry. */
export type HeartbeatAnswer = Answer<'sendHeartbeat', 200>;
/** Who may open a tunnel's URL (Cloudflare Access): `team`, `public`, or `emails`. */
export type TunnelAccess = NonNullable<TunnelSummary['access']>;

/** "who can open it", as the agent prints it next to the URL. */
export function describeAccess(access: TunnelAccess | undefined): string {
  if (!access) return 'anyone (this broker does not report an audience)';
  if (access.mode === 'public') return 'anyone: public';
  if (access.mode === 'team') return 'your team only (they log in with the team\'s identity provider or an emailed code)';
  return `only ${(access.emails ?? []).join(', ')} (they log in with an emailed code)`;
}

/**
 * Any failed call. `status` is absent when no HTTP answer came back (refused, reset, DNS,
 * timeout); `code` is the broker's error code when the body was one of its JSON errors.
 */
export class BrokerError extends Error {
  readonly status: number | undefined;
  /** Typed by the API's list as this agent was built against it; a newer broker may send one not listed. */
  readonly code: ErrorCode | undefined;
  readonly retryAfterSec: number | undefined;
  readonly details: Record<string, unknown> | undefined;
  /** No answer, and the connection was never made (refused, no such host): the broker cannot have seen the request. */
  readonly neverSent: boolean;

  constructor(
    message: string,
    init: { status?: number; code?: ErrorCode; retryAfterSec?: number; details?: Record<string, unknown>; neverSent?: boolean; cause?: unknown } = {},
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

/** What the generated client answers: the body at a 2xx in `data`, any other body in `error`. */
interface Sent<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** Per call, for the generated client: bounded, authenticated, and watched for when the answer arrives. */
type CallInit = {
  signal: AbortSignal;
  headers: { authorization: string };
  fetch: (request: Request) => Promise<Response>;
};

/** The broker's HTTP API, through the client generated from its OpenAPI document (openapi-fetch over node's fetch). No state beyond the options. */
export class BrokerClient {
  readonly baseUrl: string;
  readonly #accessToken: string;
  readonly #timeoutMs: number;
  readonly #api: Client<paths>;

  constructor(options: BrokerClientOptions) {
    // The paths are appended to it, so a path prefix (https://host/broker/) is kept.
    this.baseUrl = options.baseUrl.endsWith('/') ? options.baseUrl : `${options.baseUrl}/`;
    this.#accessToken = options.accessToken;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#api = createClient<paths>({
      baseUrl: this.baseUrl,
      headers: { 'user-agent': options.userAgent ?? `tunnel-broker-agent (node ${process.version})`, accept: 'application/json' },
      // A redirect would carry the bearer token to wherever it points.
      redirect: 'error',
    });
  }

  async createTunnel(input: { port: number; slug?: string; idempotencyKey: string; access?: TunnelAccess | undefined }, signal?: AbortSignal): Promise<CreatedTunnel> {
    const body = {
      port: input.port,
      ...(input.slug === undefined ? {} : { requestedSlug: input.slug }),
      ...(input.access === undefined ? {} : { access: input.access }),
    };
    const created = await this.#call(
      (init) => this.#api.POST('/v1/tunnels', { ...init, body, params: { header: { 'idempotency-key': input.idempotencyKey } } }),
      { signal, expect: 201 },
    );
    if (
      typeof created?.tunnelId !== 'string' || typeof created.hostname !== 'string' || typeof created.cloudflaredToken !== 'string' ||
      typeof created.heartbeatIntervalSec !== 'number' || !(created.heartbeatIntervalSec > 0)
    ) {
      throw new BrokerError('The broker answered the create with an unexpected body; is --server pointing at a tunnel broker?', { status: 201 });
    }
    // Brokers from before `url` leave it out.
    return { ...created, url: typeof created.url === 'string' ? created.url : `https://${created.hostname}` };
  }

  /**
   * `token` is the tunnel's heartbeat token when the broker issued one, else the access token.
   * The answer carries a fresh `heartbeatToken` when the one used is close to its expiry.
   */
  async heartbeat(tunnelId: string, token: string | undefined, signal?: AbortSignal): Promise<HeartbeatAnswer> {
    const beat = await this.#call(
      (init) => this.#api.POST('/v1/tunnels/{tunnelId}/heartbeat', { ...init, params: { path: { tunnelId } } }),
      { token, signal, expect: 200 },
    );
    if (typeof beat?.expiresAt !== 'string') {
      throw new BrokerError('The broker answered the heartbeat with an unexpected body; is --server pointing at a tunnel broker?', { status: 200 });
    }
    return beat;
  }

  /**
   * `tunnel` is its id, hostname or slug (the broker resolves it). Waits at least
   * DELETE_TIMEOUT_MS for the answer (see there), unless told `timeoutMs`.
   */
  async deleteTunnel(tunnel: string, signal?: AbortSignal, timeoutMs?: number): Promise<void> {
    await this.#call(
      (init) => this.#api.DELETE('/v1/tunnels/{tunnelId}', { ...init, params: { path: { tunnelId: tunnel } } }),
      { signal, expect: 204, timeoutMs: timeoutMs ?? Math.max(this.#timeoutMs, DELETE_TIMEOUT_MS) },
    );
  }

  /** Changes who may open a live tunnel's URL (same hostname); answers the tunnel. */
  async updateAccess(tunnel: string, access: TunnelAccess, signal?: AbortSignal): Promise<TunnelSummary> {
    const body = await this.#call(
      (init) => this.#api.PATCH('/v1/tunnels/{tunnelId}', { ...init, params: { path: { tunnelId: tunnel } }, body: { access } }),
      { signal, expect: 200 },
    );
    if (typeof body?.id !== 'string' || typeof body.hostname !== 'string') {
      throw new BrokerError('The broker answered with an unexpected body; is --server pointing at a tunnel broker?', { status: 200 });
    }
    return body;
  }

  /** One of the caller's live tunnels, by its id, hostname or slug (the broker resolves it). */
  async getTunnel(tunnel: string, signal?: AbortSignal): Promise<TunnelSummary> {
    const body = await this.#call(
      (init) => this.#api.GET('/v1/tunnels/{tunnelId}', { ...init, params: { path: { tunnelId: tunnel } } }),
      { signal, expect: 200 },
    );
    if (typeof body?.id !== 'string' || typeof body.hostname !== 'string') {
      throw new BrokerError('The broker answered with an unexpected body; is --server pointing at a tunnel broker?', { status: 200 });
    }
    return body;
  }

  async listTunnels(signal?: AbortSignal): Promise<TunnelSummary[]> {
    const body = await this.#call((init) => this.#api.GET('/v1/tunnels', init), { signal, expect: 200 });
    if (!Array.isArray(body?.tunnels)) throw new BrokerError('The broker answered the list with an unexpected body; is --server pointing at a tunnel broker?', { status: 200 });
    return body.tunnels;
  }

  /**
   * One call: `send` makes it through the generated client with `init`; this bounds it in time
   * and turns whatever went wrong into a BrokerError that says which it was. Resolves to the
   * body when the status is `expect` (undefined when it was not JSON: the caller checks it).
   */
  async #call<T>(
    send: (init: CallInit) => Promise<Sent<T>>,
    options: { token?: string | undefined; signal?: AbortSignal | undefined; expect: number; timeoutMs?: number },
  ): Promise<T | undefined> {
    const origin = new URL(this.baseUrl).origin;
    const timeoutMs = Math.max(1, Math.round(options.timeoutMs ?? this.#timeoutMs));
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    // Set once the status and headers are in: what fails before that is "no answer", after it "broke mid-answer".
    let answer: Response | undefined;
    let sent: Sent<T>;
    try {
      sent = await send({
        signal,
        headers: { authorization: `Bearer ${options.token ?? this.#accessToken}` },
        fetch: async (request) => (answer = await fetch(request)),
      });
    } catch (error) {
      if (answer === undefined) {
        const timedOut = timeout.aborted && !options.signal?.aborted;
        const reason = timedOut ? `no answer within ${timeoutMs / 1000} s` : describeNetworkError(error);
        throw new BrokerError(`Cannot reach the broker at ${origin}: ${reason}`, { cause: error, neverSent: !timedOut && NEVER_SENT_CODES.has(errorCode(error) ?? '') });
      }
      // A 2xx whose body is not JSON (something other than a broker answered).
      if (error instanceof SyntaxError) {
        if (answer.status === options.expect) return undefined;
        throw new BrokerError(`HTTP ${answer.status} from ${origin}`, { status: answer.status });
      }
      throw new BrokerError(`The connection to the broker at ${origin} broke mid-answer: ${describeNetworkError(error)}`, { cause: error });
    }
    const { response } = sent;
    if (response.status === options.expect) return sent.data;
    const body = sent.error ?? sent.data;
    const err = (body && typeof body === 'object' ? body : {}) as { code?: unknown; message?: unknown; details?: unknown };
    // Number(null) is 0: without the header there is no wait to honour.
    const retryAfterHeader = response.headers.get('retry-after');
    const retryAfter = retryAfterHeader === null ? Number.NaN : Number(retryAfterHeader);
    throw new BrokerError(typeof err.message === 'string' ? err.message : `HTTP ${response.status} from ${origin}`, {
      status: response.status,
      code: typeof err.code === 'string' ? (err.code as ErrorCode) : undefined,
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
