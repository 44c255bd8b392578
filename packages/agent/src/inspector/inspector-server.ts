import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { viewBody } from './body-view.js';
import { type Exchange, type ExchangeStore, type ExchangeSummary, type RawHeaders, type StoreEvent, summarize } from './exchange-store.js';
import { INSPECTOR_CSS, INSPECTOR_HTML, INSPECTOR_JS } from './inspector-page.js';
import type { RecordingProxy } from './recording-proxy.js';

/** Live-list updates go out at most this often, in one batch: a busy app does not flood the page. */
const SSE_FLUSH_MS = 100;
const SSE_KEEPALIVE_MS = 15_000;
const MAX_SSE_CLIENTS = 32;
/** How many ports past the asked one are tried when it is taken. */
const PORT_ATTEMPTS = 100;

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The exchange's request as a curl command line against the local app. */
export function curlCommand(ex: Exchange, appPort: number): string {
  const parts = ['curl'];
  if (ex.method !== 'GET') parts.push('-X', shellQuote(ex.method));
  parts.push(shellQuote(`http://localhost:${appPort}${ex.path}`));
  for (const [k, v] of ex.requestHeaders) {
    const lower = k.toLowerCase();
    if (['host', 'content-length', 'connection', 'transfer-encoding', 'keep-alive', 'accept-encoding'].includes(lower)) continue;
    parts.push('-H', shellQuote(`${k}: ${v}`));
  }
  const body = ex.requestBody;
  if (body.size > 0) {
    const view = viewBody(body, ex.requestHeaders, Number.MAX_SAFE_INTEGER);
    if (body.complete && view.text !== undefined) parts.push('--data-binary', shellQuote(view.text));
    else parts.push('--data-binary', `@body.bin  # the ${body.size}-byte body was not captured in full`);
  }
  return parts.join(' ');
}

export interface InspectorServerOptions {
  store: ExchangeStore;
  proxy: RecordingProxy;
  appPort: number;
}

/**
 * The inspector's page and JSON API on 127.0.0.1, for the developer's browser and scripts only:
 * every request must name this server in Host (DNS rebinding), and a browser request must come
 * from its own origin (Origin, Sec-Fetch-Site), so no other website can read or drive it.
 */
export class InspectorServer {
  readonly #options: InspectorServerOptions;
  readonly #server: Server;
  #port = 0;
  readonly #clients = new Set<ServerResponse>();
  readonly #pending = new Map<number, ExchangeSummary>();
  #flushTimer: NodeJS.Timeout | undefined;
  readonly #keepalive: NodeJS.Timeout;
  readonly #unsubscribe: () => void;

  constructor(options: InspectorServerOptions) {
    this.#options = options;
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((error: unknown) => {
        const status = error instanceof HttpError ? error.status : 500;
        const message = error instanceof Error ? error.message : String(error);
        if (!res.headersSent) this.#json(res, status, { error: message });
        else res.destroy();
      });
    });
    this.#unsubscribe = options.store.subscribe((event) => this.#onStoreEvent(event));
    this.#keepalive = setInterval(() => {
      for (const client of this.#clients) client.write(': keep-alive\n\n');
    }, SSE_KEEPALIVE_MS);
    this.#keepalive.unref();
  }

  get port(): number {
    return this.#port;
  }

  /** Listens on 127.0.0.1:`port`, or the next free port after it; 0 takes any free port. */
  async listen(port: number): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      const candidate = port === 0 ? 0 : port + attempt;
      try {
        await new Promise<void>((resolve, reject) => {
          this.#server.once('error', reject);
          this.#server.listen(candidate, '127.0.0.1', () => {
            this.#server.off('error', reject);
            resolve();
          });
        });
        this.#port = (this.#server.address() as { port: number }).port;
        return this.#port;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt + 1 >= PORT_ATTEMPTS || candidate >= 65_535) throw error;
      }
    }
  }

  async close(): Promise<void> {
    this.#unsubscribe();
    clearInterval(this.#keepalive);
    clearTimeout(this.#flushTimer);
    for (const client of this.#clients) client.destroy();
    this.#clients.clear();
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  #onStoreEvent(event: StoreEvent): void {
    if (this.#clients.size === 0) return;
    if (event.type === 'clear') {
      this.#pending.clear();
      this.#broadcast('clear', {});
      return;
    }
    this.#pending.set(event.exchange.id, summarize(event.exchange));
    this.#flushTimer ??= setTimeout(() => this.#flush(), SSE_FLUSH_MS);
  }

  #flush(): void {
    this.#flushTimer = undefined;
    if (this.#pending.size === 0) return;
    const batch = [...this.#pending.values()];
    this.#pending.clear();
    this.#broadcast('exchanges', batch);
  }

  #broadcast(event: string, data: unknown): void {
    const frame = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const client of this.#clients) client.write(frame);
  }

  /** Refuses what did not come from this inspector's own page or a local script. */
  #guard(req: IncomingMessage, path: string): void {
    const hosts = [`127.0.0.1:${this.#port}`, `localhost:${this.#port}`];
    const host = (req.headers.host ?? '').toLowerCase();
    if (!hosts.includes(host)) throw new HttpError(403, `refused: the inspector answers only to http://127.0.0.1:${this.#port} (Host was ${JSON.stringify(host)})`);
    const origin = req.headers.origin;
    if (origin !== undefined && !hosts.some((h) => origin.toLowerCase() === `http://${h}`)) throw new HttpError(403, `refused: requests from ${JSON.stringify(origin)} may not use the inspector`);
    const site = req.headers['sec-fetch-site'];
    const navigation = req.method === 'GET' && path === '/' && req.headers['sec-fetch-mode'] === 'navigate';
    if (site !== undefined && site !== 'same-origin' && site !== 'none' && !navigation) throw new HttpError(403, 'refused: a cross-site request may not use the inspector');
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://inspector');
    const path = url.pathname;
    this.#guard(req, path);
    const method = req.method ?? 'GET';
    const { store } = this.#options;
    if (method === 'GET' && path === '/') return this.#asset(res, 'text/html; charset=utf-8', INSPECTOR_HTML);
    if (method === 'GET' && path === '/app.js') return this.#asset(res, 'text/javascript; charset=utf-8', INSPECTOR_JS);
    if (method === 'GET' && path === '/app.css') return this.#asset(res, 'text/css; charset=utf-8', INSPECTOR_CSS);
    if (path === '/api/requests') {
      if (method === 'GET') return this.#json(res, 200, { requests: store.list().map(summarize), limits: store.limits, bytes: store.bytes });
      if (method === 'DELETE') return this.#json(res, 200, { cleared: store.clear() });
      throw new HttpError(405, `${method} is not allowed on ${path}`);
    }
    if (method === 'GET' && path === '/api/events') return this.#events(req, res);
    const detail = /^\/api\/requests\/(\d+)(\/replay)?$/.exec(path);
    if (detail) {
      const ex = store.get(Number(detail[1]));
      if (!ex) throw new HttpError(404, `no exchange ${detail[1]} (it may have been cleared or pushed out of the last ${store.limits.maxExchanges})`);
      if (!detail[2] && method === 'GET') return this.#json(res, 200, this.#detail(ex));
      if (detail[2] && method === 'POST') {
        const edits = parseEdits(await readJson(req, Math.max(1024 * 1024, store.limits.bodyCapBytes * 4)));
        if (!edits.body && !ex.requestBody.complete) {
          throw new HttpError(409, `the original request body (${ex.requestBody.size} bytes) was not captured in full; send the body to replay with`);
        }
        const replayed = await this.#options.proxy.replay(ex, edits);
        return this.#json(res, 200, { id: replayed.id });
      }
      throw new HttpError(405, `${method} is not allowed on ${path}`);
    }
    throw new HttpError(404, `no such page: ${path}`);
  }

  #detail(ex: Exchange) {
    const cap = this.#options.store.limits.bodyCapBytes;
    return {
      ...summarize(ex),
      replays: this.#options.store.list().filter((other) => other.replayOf === ex.id).map((other) => other.id),
      httpVersion: ex.httpVersion,
      remoteAddress: ex.remoteAddress,
      statusText: ex.statusText ?? null,
      timing: { requestDoneMs: ex.requestDoneMs ?? null, responseStartMs: ex.responseStartMs ?? null, durationMs: ex.durationMs ?? null },
      request: { headers: ex.requestHeaders, body: viewBody(ex.requestBody, ex.requestHeaders, cap) },
      response: ex.responseHeaders ? { headers: ex.responseHeaders, body: viewBody(ex.responseBody, ex.responseHeaders, cap) } : null,
      upgradeBytes: ex.upgrade ? { toApp: ex.upgrade.bytesToApp, toClient: ex.upgrade.bytesToClient } : null,
      curl: curlCommand(ex, this.#options.appPort),
    };
  }

  #events(req: IncomingMessage, res: ServerResponse): void {
    if (this.#clients.size >= MAX_SSE_CLIENTS) throw new HttpError(503, 'too many inspector pages are open');
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
    const snapshot = { requests: this.#options.store.list().map(summarize), maxExchanges: this.#options.store.limits.maxExchanges };
    res.write(`retry: 1000\nevent: snapshot\ndata: ${JSON.stringify(snapshot)}\n\n`);
    this.#clients.add(res);
    req.on('close', () => this.#clients.delete(res));
  }

  #asset(res: ServerResponse, type: string, body: string): void {
    res.writeHead(200, {
      'content-type': type,
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'referrer-policy': 'no-referrer',
      'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    });
    res.end(body);
  }

  #json(res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
}

async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new HttpError(413, `the replay's changes may be at most ${limit} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (!text) return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, 'the replay\'s changes must be JSON: {"method", "path", "headers", "body"}, each optional');
  }
}

function parseEdits(input: unknown): { method?: string; path?: string; headers?: RawHeaders; body?: Buffer } {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw new HttpError(400, 'the replay\'s changes must be a JSON object');
  const o = input as Record<string, unknown>;
  const edits: { method?: string; path?: string; headers?: RawHeaders; body?: Buffer } = {};
  if (o.method !== undefined) {
    if (typeof o.method !== 'string' || !TOKEN.test(o.method)) throw new HttpError(400, 'method must be an HTTP method name');
    edits.method = o.method.toUpperCase();
  }
  if (o.path !== undefined) {
    if (typeof o.path !== 'string' || !/^\/[^\s]*$/.test(o.path)) throw new HttpError(400, 'path must start with / and hold no spaces');
    edits.path = o.path;
  }
  if (o.headers !== undefined) {
    const list = Array.isArray(o.headers) ? o.headers : typeof o.headers === 'object' && o.headers !== null ? Object.entries(o.headers) : undefined;
    if (!list) throw new HttpError(400, 'headers must be [[name, value], ...] or {name: value}');
    edits.headers = list.map((pair: unknown) => {
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string' || !TOKEN.test(pair[0]) || !FIELD_VALUE.test(pair[1])) {
        throw new HttpError(400, 'each header must be a [name, value] pair of a valid name and a value without line breaks');
      }
      return [pair[0], pair[1]] as [string, string];
    });
  }
  if (o.body !== undefined) {
    if (typeof o.body !== 'string') throw new HttpError(400, 'body must be a string');
    edits.body = Buffer.from(o.body, 'utf8');
  }
  return edits;
}
