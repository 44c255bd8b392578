/**
 * An in-memory emulator of the slice of the Cloudflare v4 API the broker uses
 * (cfd_tunnel and dns_records), served over real HTTP so the official SDK can be
 * pointed at it unchanged, with injectable faults for resilience tests and
 * benchmarks. One instance owns all its state; several can run in one process.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { ApiFailure, ErrorCode, fail, type ApiReply } from './envelope.js';
import { FaultRegistry, FaultRuleError } from './faults.js';
import { matchRoute } from './routes.js';
import { EmulatorStore } from './store.js';
import type {
  AccessAudience,
  ActiveFault,
  CloudflareEmulator,
  DeletionRecord,
  EmulatedAccessApp,
  EmulatedAccessPolicy,
  EmulatedDnsRecord,
  EmulatedTunnel,
  EmulatorOptions,
  EmulatorState,
  EndpointName,
  FaultKind,
  FaultRule,
  GateLogEntry,
  RequestLogEntry,
  RequestMatch,
  TunnelConfiguration,
} from './types.js';

export type * from './types.js';
export { ENDPOINT_NAMES, FaultRuleError } from './faults.js';
export { ErrorCode } from './envelope.js';
export { encodeTunnelToken } from './store.js';

export const DEFAULT_ACCOUNT_ID = '0123456789abcdef0123456789abcdef';
export const DEFAULT_ZONE_ID = 'fedcba9876543210fedcba9876543210';
export const DEFAULT_ZONE_NAME = 'tunnels.localhost';
export const DEFAULT_API_TOKEN = 'emulator-token';
export const API_PREFIX = '/client/v4';
export const CONTROL_PREFIX = '/__emulator';

const MAX_BODY_BYTES = 1024 * 1024;

interface LogEntry {
  method: string;
  path: string;
  endpoint: EndpointName | 'unknown';
  status: number;
  fault?: FaultKind;
}

interface Waiter {
  match: RequestMatch;
  resolve: (e: RequestLogEntry) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

type Body = { kind: 'ok'; bytes: Buffer } | { kind: 'tooLarge' } | { kind: 'aborted' };

function readBody(req: IncomingMessage): Promise<Body> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (b: Body) => {
      if (done) return;
      done = true;
      resolve(b);
    };
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        finish({ kind: 'tooLarge' });
        return;
      }
      if (!done) chunks.push(chunk);
    });
    req.on('end', () => finish({ kind: 'ok', bytes: Buffer.concat(chunks) }));
    req.on('error', () => finish({ kind: 'aborted' }));
    req.on('close', () => finish({ kind: 'aborted' }));
  });
}

class ControlError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

class Emulator implements CloudflareEmulator {
  readonly accountId: string;
  readonly zoneId: string;
  readonly zoneName: string;
  readonly apiToken: string;
  url = '';
  controlUrl = '';

  readonly #server: Server;
  readonly #store: EmulatorStore;
  readonly #faults: FaultRegistry;
  readonly #logger: Logger | undefined;
  readonly #authHeader: string;
  readonly #log: LogEntry[] = [];
  readonly #counts = new Map<EndpointName | 'unknown', number>();
  /** Entries whose fate is sealed (answered, hung, or reset); kept apart so log entries stay plain. */
  readonly #settled = new WeakSet<LogEntry>();
  readonly #waiters = new Set<Waiter>();
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly #hung = new Set<ServerResponse>();
  #latencyMs = 0;
  #rayCounter = 0;
  #closed: Promise<void> | undefined;

  constructor(options: EmulatorOptions) {
    this.accountId = options.accountId ?? DEFAULT_ACCOUNT_ID;
    this.zoneId = options.zoneId ?? DEFAULT_ZONE_ID;
    this.zoneName = (options.zoneName ?? DEFAULT_ZONE_NAME).toLowerCase();
    this.apiToken = options.apiToken ?? DEFAULT_API_TOKEN;
    this.#authHeader = `Bearer ${this.apiToken}`;
    this.#logger = options.logger;
    this.#store = new EmulatorStore({
      accountId: this.accountId,
      zoneId: this.zoneId,
      zoneName: this.zoneName,
      maxTunnels: options.maxTunnels ?? 1000,
    });
    this.#faults = new FaultRegistry(options.seed ?? 1);
    this.#server = createServer((req, res) => {
      this.#onRequest(req, res).catch((err: unknown) => {
        this.#logger?.error({ err }, 'cloudflare emulator: handler crashed');
        if (!res.headersSent && !res.destroyed) {
          this.#write(res, fail(500, ErrorCode.INTERNAL, 'emulator internal error'));
        } else {
          res.destroy();
        }
      });
    });
    // The SDK keeps connections alive between calls; a benchmark should not pay for reconnects.
    this.#server.keepAliveTimeout = 30_000;
  }

  async listen(host: string, port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, host, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    const addr = this.#server.address() as AddressInfo;
    const h = addr.address.includes(':') ? `[${addr.address}]` : addr.address;
    const origin = `http://${h}:${addr.port}`;
    this.url = `${origin}${API_PREFIX}`;
    this.controlUrl = `${origin}${CONTROL_PREFIX}`;
  }

  // ---- public control surface (shared by the HTTP control API) -------------

  get requests(): ReadonlyArray<RequestLogEntry> {
    return this.#log;
  }

  injectFault(rule: FaultRule): () => void {
    const id = this.#faults.add(rule);
    return () => {
      this.#faults.remove(id);
    };
  }

  clearFaults(): void {
    this.#faults.clear();
  }

  faults(): ActiveFault[] {
    return this.#faults.list();
  }

  setLatency(ms: number): void {
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
      throw new RangeError('latency must be a non-negative number of milliseconds');
    }
    this.#latencyMs = ms;
  }

  liveTunnels(): EmulatedTunnel[] {
    return this.#store.liveTunnels();
  }

  allTunnels(): EmulatedTunnel[] {
    return this.#store.allTunnels();
  }

  dnsRecords(): EmulatedDnsRecord[] {
    return this.#store.dnsRecords();
  }

  accessApps(): EmulatedAccessApp[] {
    return this.#store.accessApps();
  }

  accessPolicies(): EmulatedAccessPolicy[] {
    return this.#store.accessPolicies();
  }

  audience(hostname: string): AccessAudience {
    return this.#store.audience(hostname);
  }

  canOpen(hostname: string, email: string | null): boolean {
    return this.#store.canOpen(hostname, email);
  }

  gateLog(): GateLogEntry[] {
    return this.#store.gateLog();
  }

  configuration(tunnelId: string): TunnelConfiguration | undefined {
    return this.#store.configuration(tunnelId);
  }

  addConnection(tunnelId: string): string {
    return this.#store.addConnection(tunnelId);
  }

  removeConnections(tunnelId: string, connectorId?: string): number {
    return this.#store.removeConnections(tunnelId, connectorId);
  }

  count(endpoint: EndpointName | 'unknown'): number {
    return this.#counts.get(endpoint) ?? 0;
  }

  deletions(): DeletionRecord[] {
    return this.#store.deletions();
  }

  state(): EmulatorState {
    return {
      url: this.url,
      accountId: this.accountId,
      zoneId: this.zoneId,
      zoneName: this.zoneName,
      latencyMs: this.#latencyMs,
      tunnels: this.#store.allTunnels(),
      dnsRecords: this.#store.dnsRecords(),
      accessApps: this.#store.accessApps(),
      accessPolicies: this.#store.accessPolicies(),
      requestCounts: Object.fromEntries(this.#counts),
      totalRequests: this.#log.length,
      faults: this.#faults.list(),
    };
  }

  waitForRequest(match: RequestMatch, timeoutMs = 5000): Promise<RequestLogEntry> {
    const found = this.#log.find((e) => this.#matches(match, e));
    if (found) return Promise.resolve(found);
    if (this.#closed) return Promise.reject(new Error('emulator is closed'));
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        match,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.delete(waiter);
          reject(new Error(`no request matching ${JSON.stringify(match)} within ${timeoutMs} ms`));
        }, timeoutMs),
      };
      this.#waiters.add(waiter);
    });
  }

  reset(): void {
    this.#store.reset();
    this.#faults.clear();
    this.#faults.reseed();
    this.#latencyMs = 0;
    this.#log.length = 0;
    this.#counts.clear();
  }

  close(): Promise<void> {
    this.#closed ??= new Promise<void>((resolve) => {
      for (const t of this.#timers) clearTimeout(t);
      this.#timers.clear();
      for (const w of this.#waiters) {
        clearTimeout(w.timer);
        w.reject(new Error('emulator closed'));
      }
      this.#waiters.clear();
      for (const res of this.#hung) res.socket?.destroy();
      this.#hung.clear();
      this.#server.close(() => resolve());
      // close() alone waits for keep-alive and in-flight sockets; tests must not wait on them.
      this.#server.closeAllConnections();
    });
    return this.#closed;
  }

  // ---- request handling ------------------------------------------------------

  #matches(m: RequestMatch, e: LogEntry): boolean {
    if (m.method !== undefined && m.method.toUpperCase() !== e.method) return false;
    if (m.endpoint !== undefined && m.endpoint !== e.endpoint) return false;
    if (m.pathIncludes !== undefined && !e.path.includes(m.pathIncludes)) return false;
    if (m.answered && !this.#settled.has(e)) return false;
    return true;
  }

  #notify(e: LogEntry): void {
    for (const w of this.#waiters) {
      if (!this.#matches(w.match, e)) continue;
      clearTimeout(w.timer);
      this.#waiters.delete(w);
      w.resolve(e);
    }
  }

  #settle(e: LogEntry, status: number): void {
    e.status = status;
    this.#settled.add(e);
    this.#logger?.debug({ method: e.method, path: e.path, endpoint: e.endpoint, status, fault: e.fault }, 'cloudflare emulator request');
    this.#notify(e);
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#timers.delete(t);
        resolve();
      }, ms);
      this.#timers.add(t);
    });
  }

  #write(res: ServerResponse, reply: ApiReply): void {
    if (res.destroyed || res.writableEnded) return;
    const payload = JSON.stringify(reply.body);
    res.writeHead(reply.status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(payload),
      'cf-ray': `${(++this.#rayCounter).toString(16).padStart(16, '0')}-EMU`,
      ...reply.headers,
    });
    res.end(payload);
  }

  async #onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const pathname = q === -1 ? rawUrl : rawUrl.slice(0, q);
    const search = q === -1 ? '' : rawUrl.slice(q + 1);
    if (pathname === CONTROL_PREFIX || pathname.startsWith(`${CONTROL_PREFIX}/`)) {
      return this.#control(req, res, pathname.slice(CONTROL_PREFIX.length), search);
    }
    return this.#api(req, res, pathname, search);
  }

  async #api(req: IncomingMessage, res: ServerResponse, pathname: string, search: string): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const underApi = pathname === API_PREFIX || pathname.startsWith(`${API_PREFIX}/`);
    const relPath = underApi ? pathname.slice(API_PREFIX.length) || '/' : pathname;
    const route = underApi ? matchRoute(method, relPath) : ({ kind: 'none' } as const);
    const endpoint = route.kind === 'found' ? route.endpoint : 'unknown';
    const entry: LogEntry = { method, path: search ? `${relPath}?${search}` : relPath, endpoint, status: 0 };
    const requestIndex = this.#log.push(entry) - 1;
    this.#counts.set(endpoint, (this.#counts.get(endpoint) ?? 0) + 1);
    this.#notify(entry);

    // Decided at arrival so `times` and the PRNG follow request order, not completion order.
    const decision = this.#faults.decide({ method, endpoint, path: entry.path });
    const fault = decision.terminal;
    if (fault) entry.fault = fault.kind;
    else if (decision.latencyMs > 0) entry.fault = 'latency';

    if (fault?.kind === 'hang') {
      this.#hung.add(res);
      res.on('close', () => this.#hung.delete(res));
      this.#settle(entry, 0);
      return;
    }

    const bodyPromise = readBody(req);
    const delay = this.#latencyMs + decision.latencyMs;
    if (delay > 0) await this.#sleep(delay);

    const answer = (reply: ApiReply) => {
      this.#write(res, reply);
      this.#settle(entry, reply.status);
    };

    if (fault?.kind === 'error5xx') {
      const status = fault.status ?? 500;
      return answer(fail(status, ErrorCode.INTERNAL, `Internal server error (emulated ${status})`));
    }
    if (fault?.kind === 'rateLimit') {
      return answer(
        fail(429, ErrorCode.RATE_LIMITED, 'Please wait and consider throttling your request speed', {
          'retry-after': String(fault.retryAfterSec ?? 1),
        }),
      );
    }
    if (req.headers.authorization !== this.#authHeader) {
      return answer(fail(403, ErrorCode.AUTH_ERROR, 'Authentication error'));
    }
    if (route.kind === 'none') {
      return answer(fail(404, ErrorCode.NO_ROUTE, 'No route for that URI'));
    }
    if (route.kind === 'wrongMethod') {
      return answer(fail(405, ErrorCode.AUTH_ERROR, `${method} method not allowed for the api_token authentication scheme`));
    }

    const body = await bodyPromise;
    if (body.kind === 'aborted') {
      // The client went away before sending its body; nothing can be answered.
      this.#settle(entry, 0);
      return;
    }
    if (body.kind === 'tooLarge') {
      res.setHeader('connection', 'close');
      return answer(fail(413, ErrorCode.BODY_TOO_LARGE, 'Request body too large'));
    }
    let parsed: unknown;
    if (body.bytes.length > 0) {
      try {
        parsed = JSON.parse(body.bytes.toString('utf8'));
      } catch {
        return answer(fail(400, ErrorCode.MALFORMED_JSON, 'Malformed JSON in request body'));
      }
    }

    const reply = this.#store.handle(route.endpoint, route.params, new URLSearchParams(search), parsed, relPath, requestIndex);

    if (fault?.kind === 'lostResponse') {
      if (fault.lostAs === 'socketReset') {
        res.socket?.destroy();
        this.#settle(entry, 0);
        return;
      }
      return answer(fail(502, ErrorCode.INTERNAL, 'Bad gateway (emulated lost response)'));
    }
    answer(reply);
  }

  // ---- HTTP control API ------------------------------------------------------

  async #control(req: IncomingMessage, res: ServerResponse, sub: string, search: string): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const send = (status: number, body: unknown) => this.#write(res, { status, body });
    try {
      const body = await this.#controlBody(req);
      const path = sub.replace(/\/$/, '');
      let m: RegExpExecArray | null;
      if (method === 'GET' && path === '/state') return send(200, this.state());
      if (method === 'GET' && path === '/requests') return send(200, { requests: this.#log });
      if (method === 'GET' && path === '/audience') {
        const hostname = new URLSearchParams(search).get('hostname') ?? '';
        return send(200, this.audience(hostname));
      }
      if (method === 'GET' && path === '/faults') return send(200, { faults: this.faults() });
      if (method === 'POST' && path === '/faults') return send(201, { id: this.#faults.add(body) });
      if (method === 'DELETE' && path === '/faults') return send(200, { cleared: this.#faults.clear() });
      if (method === 'DELETE' && (m = /^\/faults\/([^/]+)$/.exec(path))) {
        const removed = this.#faults.remove(decodeURIComponent(m[1]!));
        return send(removed ? 200 : 404, { removed });
      }
      if (method === 'POST' && path === '/latency') {
        const ms = (body as { ms?: unknown } | undefined)?.ms;
        try {
          this.setLatency(ms as number);
        } catch (err) {
          throw new ControlError(400, (err as Error).message);
        }
        return send(200, { latencyMs: this.#latencyMs });
      }
      if (method === 'POST' && path === '/reset') {
        this.reset();
        return send(200, { reset: true });
      }
      if ((m = /^\/tunnels\/([^/]+)\/connections$/.exec(path))) {
        const tunnelId = decodeURIComponent(m[1]!);
        if (method === 'POST') return send(201, { connectorId: this.addConnection(tunnelId) });
        if (method === 'DELETE') {
          const clientId = new URLSearchParams(search).get('client_id') ?? undefined;
          return send(200, { removed: this.removeConnections(tunnelId, clientId) });
        }
      }
      throw new ControlError(404, `no control route ${method} ${CONTROL_PREFIX}${sub}`);
    } catch (err) {
      if (err instanceof ControlError) return send(err.status, { error: err.message });
      if (err instanceof FaultRuleError) return send(400, { error: err.message });
      if (err instanceof ApiFailure) return send(err.status, { error: err.message, code: err.code });
      throw err;
    }
  }

  async #controlBody(req: IncomingMessage): Promise<unknown> {
    const body = await readBody(req);
    if (body.kind === 'tooLarge') throw new ControlError(413, 'body too large');
    if (body.kind === 'aborted' || body.bytes.length === 0) return undefined;
    try {
      return JSON.parse(body.bytes.toString('utf8'));
    } catch {
      throw new ControlError(400, 'malformed JSON');
    }
  }
}

export async function startCloudflareEmulator(options: EmulatorOptions = {}): Promise<CloudflareEmulator> {
  const emulator = new Emulator(options);
  await emulator.listen(options.host ?? '127.0.0.1', options.port ?? 0);
  return emulator;
}
