import { Agent, type ClientRequest, createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { canConnect, isLocalPortListening } from '../local-port.js';
import { type Exchange, type ExchangeStore, headerValue, type RawHeaders } from './exchange-store.js';

/** Hop-by-hop headers (RFC 9110 §7.6.1): for one connection, never forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authenticate', 'proxy-authorization']);

export function pairs(raw: string[]): RawHeaders {
  const out: RawHeaders = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}

/** Drops hop-by-hop headers and those the Connection header names; `keepUpgrade` keeps Connection/Upgrade for a WebSocket handshake. */
function endToEnd(headers: RawHeaders, keepUpgrade = false): RawHeaders {
  const named = new Set<string>();
  for (const [k, v] of headers) if (k.toLowerCase() === 'connection') for (const token of v.split(',')) named.add(token.trim().toLowerCase());
  return headers.filter(([k]) => {
    const lower = k.toLowerCase();
    if (keepUpgrade && (lower === 'connection' || lower === 'upgrade')) return true;
    return !HOP_BY_HOP.has(lower) && !named.has(lower);
  });
}

/** The usual forwarding headers, added to (not replacing) what cloudflared already set. */
function withForwarding(headers: RawHeaders, remoteAddress: string): RawHeaders {
  let xff: string | undefined;
  let proto: string | undefined;
  let xfHost: string | undefined;
  let host: string | undefined;
  const out: RawHeaders = [];
  for (const pair of headers) {
    const lower = pair[0].toLowerCase();
    if (lower === 'x-forwarded-for') xff = xff === undefined ? pair[1] : `${xff}, ${pair[1]}`;
    else {
      if (lower === 'x-forwarded-proto') proto ??= pair[1];
      else if (lower === 'x-forwarded-host') xfHost ??= pair[1];
      else if (lower === 'host') host ??= pair[1];
      out.push(pair);
    }
  }
  out.push(['X-Forwarded-For', xff ? `${xff}, ${remoteAddress}` : remoteAddress]);
  if (proto === undefined) out.push(['X-Forwarded-Proto', 'http']);
  if (xfHost === undefined && host !== undefined) out.push(['X-Forwarded-Host', host]);
  return out;
}

function flat(headers: RawHeaders): string[] {
  const out: string[] = [];
  for (const [k, v] of headers) out.push(k, v);
  return out;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function describeError(error: NodeJS.ErrnoException, port: number): string {
  if (error.code === 'ECONNREFUSED') return `nothing is listening on localhost:${port} (connection refused)`;
  if (error.code === 'ECONNRESET') return `the app on localhost:${port} closed the connection (connection reset)`;
  return `the app on localhost:${port} could not be reached (${error.code ?? error.message})`;
}

export function badGatewayPage(port: number, why: string): string {
  return `<!doctype html><meta charset="utf-8"><title>502 Bad Gateway</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#222}code{background:#eee;padding:.1em .3em}</style>
<h1>502 Bad Gateway</h1>
<p>The tunnel is up, but the app behind it did not answer: ${escapeHtml(why)}.</p>
<p>Start your app on <code>localhost:${port}</code> (or check that it is still running), then reload this page.</p>
<p><small>Answered by the tunnel agent on the developer's machine.</small></p>
`;
}

export interface ProxyOptions {
  /** The local app's port. */
  appPort: number;
  store: ExchangeStore;
}

/**
 * The recording reverse proxy between cloudflared and the app. Listens on an ephemeral
 * loopback port (the tunnel is created for it); forwards every request to localhost:<appPort>
 * as it streams (nothing is buffered: server-sent events, downloads and chunked uploads flow),
 * WebSocket upgrades included, and records each exchange in the store.
 */
export class RecordingProxy {
  readonly #options: ProxyOptions;
  readonly #servers: Server[] = [];
  /** Keep-alive connections to the app: no TCP handshake per request. Idle ones are closed after 4 s, before a Node app's default 5 s (or sooner when the app's Keep-Alive header says so). */
  readonly #agent = new Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64, scheduling: 'lifo', timeout: 4_000 });
  /** The address the app answers on (127.0.0.1 or ::1); found again after a refused connection. */
  #appHost: string | undefined;
  #port = 0;
  readonly #upgraded = new Set<Duplex>();

  constructor(options: ProxyOptions) {
    this.#options = options;
  }

  get port(): number {
    return this.#port;
  }

  /** Listens on 127.0.0.1 (an ephemeral port) and, when it can, on ::1 with the same port: the tunnel's ingress says `localhost`. */
  async listen(): Promise<number> {
    const v4 = this.#server();
    await new Promise<void>((resolve, reject) => {
      v4.once('error', reject);
      v4.listen(0, '127.0.0.1', () => {
        v4.off('error', reject);
        resolve();
      });
    });
    this.#port = (v4.address() as { port: number }).port;
    const v6 = this.#server();
    await new Promise<void>((resolve) => {
      v6.once('error', () => {
        // No IPv6 loopback here, or the port is taken there: IPv4 serves alone.
        this.#servers.splice(this.#servers.indexOf(v6), 1);
        resolve();
      });
      v6.listen(this.#port, '::1', () => resolve());
    });
    return this.#port;
  }

  async close(): Promise<void> {
    for (const socket of this.#upgraded) socket.destroy();
    await Promise.all(this.#servers.map((server) => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    })));
    this.#agent.destroy();
  }

  #server(): Server {
    // No limit on how long a request may take (long uploads, event streams), and idle
    // connections kept longer than cloudflared keeps its own to the origin (90 s), so it never
    // reuses one this side is just closing.
    const server = createServer({ keepAliveTimeout: 120_000, requestTimeout: 0 }, (req, res) => this.#onRequest(req, res));
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.#onUpgrade(req, socket, head));
    server.on('clientError', (_error, socket) => socket.destroy());
    this.#servers.push(server);
    return server;
  }

  async #host(): Promise<string | undefined> {
    if (this.#appHost) return this.#appHost;
    const port = this.#options.appPort;
    if (await isLocalPortListening(port, 1_000)) {
      // Which family: 127.0.0.1 unless only ::1 answers.
      this.#appHost = (await canConnect('127.0.0.1', port)) ? '127.0.0.1' : '::1';
    }
    return this.#appHost;
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const { store } = this.#options;
    const headers = pairs(req.rawHeaders);
    const ex = store.begin({ method: req.method ?? 'GET', path: req.url ?? '/', httpVersion: req.httpVersion, remoteAddress: req.socket.remoteAddress ?? '', headers });
    req.on('end', () => {
      ex.requestDoneMs = performance.now() - ex.t0;
    });
    res.on('close', () => {
      if (!res.writableFinished) store.finish(ex, 'the visitor closed the connection before the response ended');
    });
    const outgoing = withForwarding(endToEnd(headers), req.socket.remoteAddress ?? '127.0.0.1');
    // A request without a body can be sent again as it is when the app had closed the kept-alive
    // connection it went out on (a race no client can avoid); once, and only then.
    const bodiless = req.headers['content-length'] === undefined && req.headers['transfer-encoding'] === undefined;
    let retried = false;
    const send = (host: string) => {
      const upstream = this.#send(host, ex, req.method ?? 'GET', req.url ?? '/', outgoing, (up) => {
        const responseHeaders = endToEnd(pairs(up.rawHeaders));
        store.respond(ex, up.statusCode ?? 502, up.statusMessage, pairs(up.rawHeaders));
        res.writeHead(up.statusCode ?? 502, up.statusMessage, flat(responseHeaders));
        // A stream (no length, or server-sent events): its head goes out now, not with the first event.
        if (up.headers['content-length'] === undefined) res.flushHeaders();
        up.on('data', (chunk: Buffer) => ex.responseBody.add(chunk));
        up.pipe(res);
        up.on('end', () => store.finish(ex));
        up.on('error', () => {
          store.finish(ex, `the app on localhost:${this.#options.appPort} broke off the response`);
          res.destroy();
        });
      }, (error) => {
        if (error.code === 'ECONNRESET' && upstream.reusedSocket && bodiless && !retried && !res.headersSent && !res.destroyed) {
          retried = true;
          send(host);
        } else if (res.headersSent) {
          store.finish(ex, describeError(error, this.#options.appPort));
          res.destroy();
        } else this.#badGateway(ex, req, res, describeError(error, this.#options.appPort));
      });
      res.on('close', () => {
        if (!res.writableFinished) upstream.destroy();
      });
      if (retried) {
        upstream.end();
        return;
      }
      // Listened to only now: until the app's address is known the request stays paused.
      req.on('data', (chunk: Buffer) => ex.requestBody.add(chunk));
      req.pipe(upstream);
    };
    const host = this.#appHost;
    if (host) send(host);
    else {
      void this.#host().then((found) => {
        if (found) send(found);
        else {
          req.on('data', (chunk: Buffer) => ex.requestBody.add(chunk));
          this.#badGateway(ex, req, res, describeError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }), this.#options.appPort));
        }
      });
    }
  }

  /** One request to the app; `onError` for a failure before its answer (and a refused connection makes the address be looked up again). */
  #send(host: string, ex: Exchange, method: string, path: string, headers: RawHeaders, onResponse: (up: IncomingMessage) => void, onError: (error: NodeJS.ErrnoException) => void): ClientRequest {
    const upstream = request({ host, port: this.#options.appPort, method, path, headers: flat(headers), agent: this.#agent, setHost: false });
    let answered = false;
    upstream.on('response', (up) => {
      answered = true;
      onResponse(up);
    });
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ECONNREFUSED') this.#appHost = undefined;
      if (!answered) onError(error);
      else this.#options.store.finish(ex, describeError(error, this.#options.appPort));
    });
    return upstream;
  }

  /** The app could not be reached: the visitor gets the 502 page; the exchange ends once the request body is read (and recorded). */
  #badGateway(ex: Exchange, req: IncomingMessage, res: ServerResponse, why: string): void {
    const page = badGatewayPage(this.#options.appPort, why);
    const headers: RawHeaders = [['Content-Type', 'text/html; charset=utf-8'], ['Content-Length', String(Buffer.byteLength(page))], ['Cache-Control', 'no-store']];
    this.#options.store.respond(ex, 502, 'Bad Gateway', headers);
    ex.responseBody.add(Buffer.from(page));
    if (!res.headersSent) res.writeHead(502, flat(headers)).end(page);
    const finish = () => this.#options.store.finish(ex, why);
    if (req.readableEnded || req.destroyed) finish();
    else {
      req.once('end', finish);
      req.once('close', finish);
      req.resume();
    }
  }

  /**
   * Sends a recorded request to the app again, optionally changed, and records the result
   * as a new exchange linked to the original. Resolves at the response's head (or failure).
   */
  async replay(original: Exchange, edits: { method?: string; path?: string; headers?: RawHeaders; body?: Buffer }): Promise<Exchange> {
    const { store } = this.#options;
    const method = edits.method ?? original.method;
    const path = edits.path ?? original.path;
    // A copy: the captured buffer goes back to the pool if the original is pushed out while this is sent.
    const body = edits.body ?? Buffer.from(original.requestBody.bytes());
    const base = (edits.headers ?? original.requestHeaders).filter(([k]) => !['content-length', 'transfer-encoding'].includes(k.toLowerCase()));
    // HTTP/1.1 needs a Host: the original's when the changed headers leave it out.
    const host = headerValue(original.requestHeaders, 'host');
    const headers: RawHeaders = headerValue(base, 'host') === undefined && host !== undefined ? [['Host', host], ...base] : [...base];
    if (body.length > 0 || !['GET', 'HEAD', 'DELETE', 'OPTIONS'].includes(method.toUpperCase())) headers.push(['Content-Length', String(body.length)]);
    const ex = store.begin({ method, path, httpVersion: '1.1', remoteAddress: '127.0.0.1', headers, replayOf: original.id });
    ex.requestBody.add(body);
    ex.requestDoneMs = 0;
    const appHost = await this.#host();
    const fail = (why: string) => {
      const page = badGatewayPage(this.#options.appPort, why);
      store.respond(ex, 502, 'Bad Gateway', [['Content-Type', 'text/html; charset=utf-8']]);
      ex.responseBody.add(Buffer.from(page));
      store.finish(ex, why);
    };
    if (!appHost) {
      fail(describeError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }), this.#options.appPort));
      return ex;
    }
    return new Promise<Exchange>((resolve) => {
      const upstream = this.#send(appHost, ex, method, path, withForwarding(endToEnd(headers), '127.0.0.1'), (up) => {
        store.respond(ex, up.statusCode ?? 502, up.statusMessage, pairs(up.rawHeaders));
        up.on('data', (chunk: Buffer) => ex.responseBody.add(chunk));
        up.on('end', () => store.finish(ex));
        up.on('error', () => store.finish(ex, `the app on localhost:${this.#options.appPort} broke off the response`));
        resolve(ex);
      }, (error) => {
        fail(describeError(error, this.#options.appPort));
        resolve(ex);
      });
      upstream.end(body);
    });
  }

  /** A WebSocket (or any) upgrade: the handshake goes to the app as it came, then bytes flow both ways untouched. */
  #onUpgrade(req: IncomingMessage, client: Duplex, head: Buffer): void {
    const { store, appPort } = this.#options;
    const headers = pairs(req.rawHeaders);
    const ex = store.begin({ method: req.method ?? 'GET', path: req.url ?? '/', httpVersion: req.httpVersion, remoteAddress: req.socket.remoteAddress ?? '', headers });
    const upgrade = { protocol: (req.headers.upgrade ?? 'unknown').toLowerCase(), bytesToApp: head.length, bytesToClient: 0 };
    ex.upgrade = upgrade;
    this.#upgraded.add(client);
    const refuse = (why: string) => {
      const page = badGatewayPage(appPort, why);
      store.respond(ex, 502, 'Bad Gateway', [['Content-Type', 'text/html; charset=utf-8']]);
      ex.responseBody.add(Buffer.from(page));
      store.finish(ex, why);
      client.end(`HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(page)}\r\nConnection: close\r\n\r\n${page}`);
      this.#upgraded.delete(client);
    };
    void this.#host().then((host) => {
      if (!host) {
        refuse(describeError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }), appPort));
        return;
      }
      const app: Socket = connect({ host, port: appPort });
      app.setNoDelay(true);
      const outgoing = withForwarding(endToEnd(headers, true), req.socket.remoteAddress ?? '127.0.0.1');
      let connected = false;
      let headText = '';
      let headDone = false;
      app.on('connect', () => {
        connected = true;
        app.write(`${req.method} ${req.url} HTTP/1.1\r\n${outgoing.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);
        if (head.length > 0) app.write(head);
        client.pipe(app);
        app.pipe(client);
      });
      app.on('data', (chunk: Buffer) => {
        upgrade.bytesToClient += chunk.length;
        if (headDone) return;
        // The app's answer head, for the record (the bytes themselves flow on unchanged).
        headText += chunk.toString('latin1');
        const end = headText.indexOf('\r\n\r\n');
        if (end === -1 && headText.length < 16_384) return;
        headDone = true;
        const lines = headText.slice(0, end === -1 ? undefined : end).split('\r\n');
        const status = /^HTTP\/\d\.\d (\d{3}) ?(.*)$/.exec(lines[0] ?? '');
        const responseHeaders: RawHeaders = [];
        for (const line of lines.slice(1)) {
          const colon = line.indexOf(':');
          if (colon > 0) responseHeaders.push([line.slice(0, colon), line.slice(colon + 1).trim()]);
        }
        store.respond(ex, status ? Number(status[1]) : 0, status?.[2], responseHeaders);
      });
      client.on('data', (chunk: Buffer) => {
        upgrade.bytesToApp += chunk.length;
      });
      const done = (why?: string) => {
        this.#upgraded.delete(client);
        client.destroy();
        app.destroy();
        store.finish(ex, why);
      };
      app.on('error', (error: NodeJS.ErrnoException) => {
        if (error.code === 'ECONNREFUSED') this.#appHost = undefined;
        if (!connected) refuse(describeError(error, appPort));
        else done(describeError(error, appPort));
      });
      app.on('close', () => {
        if (connected) done();
      });
      client.on('error', () => done());
      client.on('close', () => {
        if (connected) done();
      });
    });
  }
}
