/**
 * The inspector's memory: the last exchanges that went through the recording proxy, with their
 * bodies captured up to a cap, inside a total byte budget. Everything it holds is bounded:
 *
 *   - at most `maxExchanges` exchanges (the oldest is forgotten first);
 *   - at most `bodyCapBytes` of each body (past that only the size is counted);
 *   - at most `memoryCapBytes` for everything kept (bodies and headers): past it, the oldest
 *     exchanges lose their bodies first, then whole exchanges go.
 */

/** The defaults of `tunnel connect`'s --inspect-* flags. */
export const INSPECT_DEFAULTS = {
  port: 4040,
  maxExchanges: 500,
  bodyCapBytes: 64 * 1024,
  /**
   * Bodies and headers in all. Chosen for the agent's RSS budget (< 100 MB with a full ring of
   * 64 KiB bodies, bench/results.md section 5): node alone is ~60 MB of it. 500 exchanges with
   * bodies of up to ~24 KiB fit whole; with 64 KiB bodies the newest ~190 keep theirs and the
   * older ones their sizes.
   */
  memoryCapBytes: 12 * 1024 * 1024,
} as const;

export interface StoreLimits {
  maxExchanges: number;
  bodyCapBytes: number;
  memoryCapBytes: number;
}

export type RawHeaders = Array<[string, string]>;

/** Content types whose bytes are not kept in a response (type and size are): nobody reads them as text. */
const BINARY_TYPE = /^(image|audio|video|font)\/|^application\/(octet-stream|zip|gzip|x-gzip|pdf|wasm|x-tar|x-7z-compressed|vnd\.|x-protobuf|protobuf|grpc)/i;

export function isBinaryContentType(contentType: string | undefined): boolean {
  return contentType !== undefined && BINARY_TYPE.test(contentType) && !/^image\/svg/i.test(contentType);
}

/**
 * Buffers for captured bodies, in power-of-two sizes, reused: a body forgotten (pushed out
 * or dropped for the budget) gives its buffer back for the next one. Once the ring is full the
 * agent stops allocating for bodies, so freed buffers do not pile up as garbage waiting for a
 * full GC, nor fragment the process's memory. What waits for reuse is bounded too.
 */
export class BufferPool {
  readonly #free = new Map<number, Buffer[]>();
  #idle = 0;
  readonly #limit: number;

  constructor(limitBytes: number) {
    this.#limit = limitBytes;
  }

  static sizeFor(bytes: number, cap: number): number {
    let size = 1024;
    while (size < bytes) size *= 2;
    return Math.min(size, Math.max(cap, bytes));
  }

  take(size: number): Buffer {
    const buffer = this.#free.get(size)?.pop();
    if (buffer) {
      this.#idle -= size;
      return buffer;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  give(buffer: Buffer): void {
    if (this.#idle + buffer.length > this.#limit) return;
    const list = this.#free.get(buffer.length) ?? [];
    list.push(buffer);
    this.#free.set(buffer.length, list);
    this.#idle += buffer.length;
  }

  get idleBytes(): number {
    return this.#idle;
  }
}

/** One body as it streams: its size, and its first bytes up to the cap, copied into one pooled buffer (no socket buffer is held). */
export class BodyCapture {
  size = 0;
  #buffer: Buffer | undefined;
  #kept = 0;
  /** Content-Length, when the body announced it: the buffer is sized for it at once. */
  expected: number | undefined;
  /** Why the bytes are not (all) here: over the cap, binary, or dropped for the memory budget. */
  omitted: 'binary' | 'dropped' | undefined;
  done = false;
  readonly #cap: number;
  readonly #charge: (bytes: number) => void;
  readonly #pool: BufferPool | undefined;

  /** `charge` is told of every byte of buffer this body takes (its capacity, not only what it filled). */
  constructor(cap: number, keepBytes: boolean, charge: (bytes: number) => void, pool?: BufferPool) {
    this.#cap = keepBytes ? cap : 0;
    if (!keepBytes) this.omitted = 'binary';
    this.#charge = charge;
    this.#pool = pool;
  }

  add(chunk: Buffer): void {
    this.size += chunk.length;
    if (this.omitted !== undefined || this.#kept >= this.#cap) return;
    const take = Math.min(chunk.length, this.#cap - this.#kept);
    const need = this.#kept + take;
    if (!this.#buffer || this.#buffer.length < need) {
      // Sized for the announced length, else grown by doubling; never past the cap.
      const size = BufferPool.sizeFor(Math.min(this.#cap, Math.max(need, this.expected ?? 0)), this.#cap);
      const grown = this.#pool ? this.#pool.take(size) : Buffer.allocUnsafeSlow(size);
      const old = this.#buffer;
      if (old) {
        old.copy(grown, 0, 0, this.#kept);
        this.#pool?.give(old);
      }
      this.#buffer = grown;
      chunk.copy(grown, this.#kept, 0, take);
      this.#kept = need;
      // Last: going over the budget may drop this very body.
      this.#charge(grown.length - (old?.length ?? 0));
      return;
    }
    chunk.copy(this.#buffer, this.#kept, 0, take);
    this.#kept = need;
  }

  get kept(): number {
    return this.#kept;
  }

  /** The whole body is here (not cut at the cap, not dropped). */
  get complete(): boolean {
    return this.omitted === undefined && this.#kept === this.size;
  }

  bytes(): Buffer {
    return this.#buffer ? this.#buffer.subarray(0, this.#kept) : Buffer.alloc(0);
  }

  /** Forgets the bytes (the memory budget); the size stays. Returns how many bytes of buffer it gave back. */
  drop(): number {
    const freed = this.#buffer?.length ?? 0;
    if (this.#buffer) this.#pool?.give(this.#buffer);
    this.#buffer = undefined;
    this.#kept = 0;
    if (this.size > 0) this.omitted ??= 'dropped';
    return freed;
  }
}

export type ExchangeState = 'pending' | 'streaming' | 'complete' | 'error';

export interface Exchange {
  id: number;
  /** The exchange this one replays. */
  replayOf?: number;
  /** Epoch ms. */
  startedAt: number;
  /** performance.now() at the start, for the timings. */
  t0: number;
  method: string;
  /** Path and query, as the visitor asked. */
  path: string;
  httpVersion: string;
  remoteAddress: string;
  /** As received, before the proxy's forwarding headers. */
  requestHeaders: RawHeaders;
  requestBody: BodyCapture;
  status?: number;
  statusText?: string;
  responseHeaders?: RawHeaders;
  responseBody: BodyCapture;
  /** ms from the start: request body fully read, response headers in, finished. */
  requestDoneMs?: number;
  responseStartMs?: number;
  durationMs?: number;
  state: ExchangeState;
  error?: string;
  /** A WebSocket (or other) upgrade: bytes each way once upgraded. */
  upgrade?: { protocol: string; bytesToApp: number; bytesToClient: number };
  /** The memory this exchange is charged for, bodies included. */
  charged: number;
}

/** What the list shows of one exchange. */
export interface ExchangeSummary {
  id: number;
  replayOf: number | null;
  method: string;
  path: string;
  status: number | null;
  state: ExchangeState;
  durationMs: number | null;
  startedAt: string;
  requestSize: number;
  responseSize: number;
  contentType: string | null;
  error: string | null;
  upgrade: string | null;
}

export function headerValue(headers: RawHeaders | undefined, name: string): string | undefined {
  if (!headers) return undefined;
  const lower = name.toLowerCase();
  for (const [k, v] of headers) if (k.toLowerCase() === lower) return v;
  return undefined;
}

function contentLength(body: BodyCapture, headers: RawHeaders): BodyCapture {
  const length = Number(headerValue(headers, 'content-length'));
  if (Number.isSafeInteger(length) && length > 0) body.expected = length;
  return body;
}

export function summarize(ex: Exchange): ExchangeSummary {
  return {
    id: ex.id,
    replayOf: ex.replayOf ?? null,
    method: ex.method,
    path: ex.path,
    status: ex.status ?? null,
    state: ex.state,
    durationMs: ex.durationMs ?? null,
    startedAt: new Date(ex.startedAt).toISOString(),
    requestSize: ex.requestBody.size,
    responseSize: ex.upgrade ? ex.upgrade.bytesToClient : ex.responseBody.size,
    contentType: headerValue(ex.responseHeaders, 'content-type') ?? null,
    error: ex.error ?? null,
    upgrade: ex.upgrade?.protocol ?? null,
  };
}

function headersSize(headers: RawHeaders | undefined): number {
  let n = 0;
  if (headers) for (const [k, v] of headers) n += k.length + v.length + 32;
  return n;
}

/** What every exchange costs besides its headers and bodies (object, strings, timings). */
const EXCHANGE_OVERHEAD = 512;

export type StoreEvent = { type: 'exchange'; exchange: Exchange } | { type: 'clear' };

export class ExchangeStore {
  readonly limits: StoreLimits;
  /** Oldest first. */
  #ring: Exchange[] = [];
  readonly #byId = new Map<number, Exchange>();
  #nextId = 1;
  #bytes = 0;
  readonly #listeners = new Set<(event: StoreEvent) => void>();
  readonly #pool: BufferPool;

  constructor(limits: Partial<StoreLimits> = {}) {
    this.limits = {
      maxExchanges: limits.maxExchanges ?? INSPECT_DEFAULTS.maxExchanges,
      bodyCapBytes: limits.bodyCapBytes ?? INSPECT_DEFAULTS.bodyCapBytes,
      memoryCapBytes: limits.memoryCapBytes ?? INSPECT_DEFAULTS.memoryCapBytes,
    };
    // Buffers waiting for reuse: up to an eighth of the budget more.
    this.#pool = new BufferPool(Math.floor(this.limits.memoryCapBytes / 8));
  }

  /** Bytes kept now (bodies, headers, per-exchange overhead). */
  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#ring.length;
  }

  subscribe(listener: (event: StoreEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** A new exchange, at the start of a request. */
  begin(input: { method: string; path: string; httpVersion: string; remoteAddress: string; headers: RawHeaders; replayOf?: number }): Exchange {
    const id = this.#nextId++;
    const charge = (bytes: number) => this.#charge(ex, bytes);
    const ex: Exchange = {
      id,
      ...(input.replayOf !== undefined ? { replayOf: input.replayOf } : {}),
      startedAt: Date.now(),
      t0: performance.now(),
      method: input.method,
      path: input.path,
      httpVersion: input.httpVersion,
      remoteAddress: input.remoteAddress,
      requestHeaders: input.headers,
      requestBody: contentLength(new BodyCapture(this.limits.bodyCapBytes, true, charge, this.#pool), input.headers),
      responseBody: new BodyCapture(0, false, charge),
      state: 'pending',
      charged: 0,
    };
    this.#ring.push(ex);
    this.#byId.set(id, ex);
    while (this.#ring.length > this.limits.maxExchanges) this.#evictOldest();
    this.#charge(ex, EXCHANGE_OVERHEAD + input.path.length + headersSize(input.headers));
    this.changed(ex);
    return ex;
  }

  /** The response's head arrived. */
  respond(ex: Exchange, status: number, statusText: string | undefined, headers: RawHeaders): void {
    ex.status = status;
    if (statusText !== undefined) ex.statusText = statusText;
    ex.responseHeaders = headers;
    ex.responseStartMs = performance.now() - ex.t0;
    ex.state = 'streaming';
    const type = headerValue(headers, 'content-type');
    const encoded = headerValue(headers, 'content-encoding');
    // Compressed bodies are kept (the detail view inflates them); plainly binary ones are not.
    ex.responseBody = contentLength(new BodyCapture(this.limits.bodyCapBytes, Boolean(encoded) || !isBinaryContentType(type), (bytes) => this.#charge(ex, bytes), this.#pool), headers);
    this.#charge(ex, headersSize(headers));
    this.changed(ex);
  }

  finish(ex: Exchange, error?: string): void {
    if (ex.state === 'complete' || ex.state === 'error') return;
    ex.durationMs = performance.now() - ex.t0;
    ex.requestBody.done = true;
    ex.responseBody.done = true;
    if (error !== undefined) {
      ex.state = 'error';
      ex.error = error;
    } else ex.state = 'complete';
    this.changed(ex);
  }

  changed(ex: Exchange): void {
    if (!this.#byId.has(ex.id)) return;
    for (const listener of this.#listeners) listener({ type: 'exchange', exchange: ex });
  }

  get(id: number): Exchange | undefined {
    return this.#byId.get(id);
  }

  /** Newest first. */
  list(): Exchange[] {
    return this.#ring.slice().reverse();
  }

  clear(): number {
    const n = this.#ring.length;
    for (const ex of this.#ring) this.#release(ex);
    this.#ring = [];
    this.#byId.clear();
    this.#bytes = 0;
    for (const listener of this.#listeners) listener({ type: 'clear' });
    return n;
  }

  #charge(ex: Exchange, bytes: number): void {
    // An exchange already forgotten (evicted or cleared) still streams: keep nothing for it.
    if (!this.#byId.has(ex.id)) {
      ex.requestBody.drop();
      ex.responseBody.drop();
      return;
    }
    ex.charged += bytes;
    this.#bytes += bytes;
    if (this.#bytes > this.limits.memoryCapBytes) this.#trim();
  }

  /** Over the budget: the oldest bodies go first, then the oldest exchanges (never the newest). */
  #trim(): void {
    for (const ex of this.#ring) {
      if (this.#bytes <= this.limits.memoryCapBytes) return;
      const freed = ex.requestBody.drop() + ex.responseBody.drop();
      ex.charged -= freed;
      this.#bytes -= freed;
    }
    while (this.#bytes > this.limits.memoryCapBytes && this.#ring.length > 1) this.#evictOldest();
  }

  #evictOldest(): void {
    const ex = this.#ring.shift();
    if (ex) this.#release(ex);
  }

  #release(ex: Exchange): void {
    this.#byId.delete(ex.id);
    this.#bytes -= ex.charged;
    ex.charged = 0;
    ex.requestBody.drop();
    ex.responseBody.drop();
  }
}
