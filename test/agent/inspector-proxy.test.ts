import { createServer as createNetServer } from 'node:net';
import { createServer, type IncomingMessage, request, type Server } from 'node:http';
import { gzipSync } from 'node:zlib';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startInspector, type RunningInspector } from '../../packages/agent/src/inspector/inspector.js';
import { connectWebSocket, webSocketEchoHandler } from '../helpers/websocket.js';

// The recording proxy and the inspector's API in-process, against a real local app on real
// sockets: what the app receives, what the visitor gets, and what the inspector records.

interface Received {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

/** Resolves when released; for "the other side saw this before that happened" without sleeping. */
function latch<T = void>() {
  let release!: (value: T) => void;
  const promise = new Promise<T>((resolve) => (release = resolve));
  return { promise, release };
}

let app: Server;
let appPort: number;
const received: Received[] = [];
let sseGate = latch();
let uploadFirstChunk = latch<number>();
const PNG = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');

beforeAll(async () => {
  app = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://app');
    if (url.pathname === '/sse') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
      res.write('data: one\n\n');
      void sseGate.promise.then(() => res.end('data: two\n\n'));
      return;
    }
    if (url.pathname === '/download') {
      const total = Number(url.searchParams.get('bytes'));
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) });
      const chunk = Buffer.alloc(64 * 1024, 7);
      let sent = 0;
      const pump = () => {
        while (sent < total) {
          const piece = chunk.subarray(0, Math.min(chunk.length, total - sent));
          sent += piece.length;
          if (!res.write(piece)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      if (url.pathname === '/upload' && chunks.length === 0) uploadFirstChunk.release(c.length);
      chunks.push(c);
    });
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      if (url.pathname === '/png') return void res.writeHead(200, { 'content-type': 'image/png' }).end(PNG);
      if (url.pathname === '/gzip') return void res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' }).end(gzipSync(JSON.stringify({ zipped: true })));
      if (url.pathname === '/text') return void res.writeHead(201, { 'content-type': 'text/plain; charset=utf-8' }).end('plain text ✓');
      if (url.pathname === '/fail') return void res.writeHead(503, { 'content-type': 'text/plain' }).end('down for a moment');
      res.writeHead(200, { 'content-type': 'application/json', 'x-app': 'yes' });
      res.end(req.method === 'HEAD' ? undefined : JSON.stringify({ method: req.method, url: req.url, size: body.length }));
    });
  });
  webSocketEchoHandler(app);
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  appPort = (app.address() as { port: number }).port;
});
afterAll(async () => {
  await new Promise<void>((resolve) => {
    app.close(() => resolve());
    app.closeAllConnections();
  });
});

const running: RunningInspector[] = [];
afterEach(async () => {
  for (const inspector of running.splice(0)) await inspector.close();
  received.length = 0;
});

async function inspector(options: Parameters<typeof startInspector>[0] = { appPort: 0 }) {
  const started = await startInspector({ inspectPort: 0, ...options, appPort: options.appPort || appPort });
  running.push(started);
  return { ...started, through: (path: string) => `http://127.0.0.1:${started.proxyPort}${path}` };
}

interface Detail {
  id: number;
  method: string;
  path: string;
  status: number | null;
  state: string;
  error: string | null;
  replayOf: number | null;
  replays: number[];
  requestSize: number;
  responseSize: number;
  timing: { requestDoneMs: number | null; responseStartMs: number | null; durationMs: number | null };
  request: { headers: Array<[string, string]>; body: Record<string, unknown> };
  response: { headers: Array<[string, string]>; body: Record<string, unknown> } | null;
  upgrade: string | null;
  curl: string;
}

async function api<T>(base: string, path: string, init: RequestInit = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(base + path, init);
  return { status: res.status, body: (await res.json()) as T };
}

const list = async (url: string) => (await api<{ requests: Detail[] }>(url, '/api/requests')).body.requests;

/** The exchange once it finished (a response body may still stream after the visitor's fetch resolved). */
async function finished(url: string, id: number): Promise<Detail> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { body } = await api<Detail>(url, `/api/requests/${id}`);
    if (body.state === 'complete' || body.state === 'error') return body;
    if (Date.now() > deadline) throw new Error(`exchange ${id} still ${body.state}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const header = (pairs: Array<[string, string]>, name: string) => pairs.find(([k]) => k.toLowerCase() === name)?.[1];

describe('the recording proxy', () => {
  it('passes every method to the app with its path, query, headers and body, adds the forwarding headers, and records each', async () => {
    const i = await inspector();
    const methods = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];
    for (const method of methods) {
      const body = ['GET', 'HEAD'].includes(method) ? undefined : `body of ${method}`;
      const res = await fetch(i.through(`/things/42?q=${method}&x=%20y`), { method, body, headers: { 'x-custom': method, 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https' } });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-app')).toBe('yes');
      if (method !== 'HEAD') expect(await res.json()).toEqual({ method, url: `/things/42?q=${method}&x=%20y`, size: body?.length ?? 0 });
    }
    expect(received.map((r) => r.method)).toEqual(methods);
    for (const r of received) {
      expect(r.headers['x-custom']).toBe(r.method);
      expect(r.headers.host).toBe(`127.0.0.1:${i.proxyPort}`);
      expect(r.headers['x-forwarded-for']).toBe('203.0.113.9, 127.0.0.1');
      expect(r.headers['x-forwarded-proto']).toBe('https');
      expect(r.headers['x-forwarded-host']).toBe(`127.0.0.1:${i.proxyPort}`);
      expect(r.body.toString()).toBe(['GET', 'HEAD'].includes(r.method) ? '' : `body of ${r.method}`);
    }
    const recorded = await list(i.url);
    expect(recorded.map((r) => r.method)).toEqual([...methods].reverse());
    for (const r of recorded) {
      const d = await finished(i.url, r.id);
      expect(d).toMatchObject({ status: 200, state: 'complete', path: `/things/42?q=${d.method}&x=%20y` });
      expect(d.timing.durationMs).toBeGreaterThanOrEqual(d.timing.responseStartMs!);
      expect(header(d.request.headers, 'x-custom')).toBe(d.method);
      if (!['GET', 'HEAD'].includes(d.method)) expect(d.request.body).toMatchObject({ kind: 'text', text: `body of ${d.method}` });
    }
  });

  it('records bodies of every kind: JSON pretty-printed, form fields, text, binary as type and size, compressed decoded, past the cap only the size', async () => {
    const i = await inspector({ appPort, bodyCapBytes: 1024 });
    await fetch(i.through('/json'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"user":{"id":7,"tags":["a","b"]}}' });
    await fetch(i.through('/form'), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'name=Ada+Lovelace&lang=en&lang=fr' });
    const text = await fetch(i.through('/text'), { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' });
    expect(await text.text()).toBe('plain text ✓');
    const png = await fetch(i.through('/png'));
    expect(Buffer.from(await png.arrayBuffer())).toEqual(PNG);
    const gz = await fetch(i.through('/gzip'));
    expect(await gz.json()).toEqual({ zipped: true });
    const big = 'x'.repeat(5000);
    await fetch(i.through('/big'), { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: big });
    expect(received.find((r) => r.url === '/big')!.body.toString()).toBe(big);

    const byPath = new Map((await list(i.url)).map((r) => [r.path, r.id]));
    const json = await finished(i.url, byPath.get('/json')!);
    expect(json.request.body).toMatchObject({ kind: 'json', pretty: '{\n  "user": {\n    "id": 7,\n    "tags": [\n      "a",\n      "b"\n    ]\n  }\n}' });
    expect(json.response!.body).toMatchObject({ kind: 'json', pretty: JSON.stringify({ method: 'POST', url: '/json', size: 34 }, null, 2) });
    const form = await finished(i.url, byPath.get('/form')!);
    expect(form.request.body).toMatchObject({ kind: 'form', form: [['name', 'Ada Lovelace'], ['lang', 'en'], ['lang', 'fr']] });
    const plain = await finished(i.url, byPath.get('/text')!);
    expect(plain.request.body).toMatchObject({ kind: 'text', text: 'hello' });
    expect(plain.response!.body).toMatchObject({ kind: 'text', text: 'plain text ✓' });
    const image = await finished(i.url, byPath.get('/png')!);
    expect(image.response!.body).toEqual({ size: PNG.length, captured: 0, contentType: 'image/png', omitted: 'binary', kind: 'binary' });
    const zipped = await finished(i.url, byPath.get('/gzip')!);
    expect(zipped.response!.body).toMatchObject({ kind: 'json', decoded: 'gzip', text: '{"zipped":true}' });
    const cut = await finished(i.url, byPath.get('/big')!);
    expect(cut.request.body).toMatchObject({ size: 5000, captured: 1024, omitted: 'truncated', kind: 'text', text: 'x'.repeat(1024) });
    expect(cut.requestSize).toBe(5000);
  });

  it('streams without buffering: server-sent events arrive one by one, a large download flows, a chunked upload reaches the app while it is still being sent', async () => {
    const i = await inspector({ appPort, bodyCapBytes: 64 * 1024 });
    // SSE: the first event reaches the visitor while the app holds the response open.
    sseGate = latch();
    const events = await new Promise<{ first: string; rest: Promise<string> }>((resolve, reject) => {
      const req = request(i.through('/sse'), (res) => {
        expect(res.headers['content-type']).toBe('text/event-stream');
        let all = '';
        const rest = new Promise<string>((done) => res.on('end', () => done(all)));
        res.once('data', (chunk: Buffer) => {
          all += chunk.toString();
          res.on('data', (more: Buffer) => (all += more.toString()));
          resolve({ first: chunk.toString(), rest });
        });
      });
      req.on('error', reject);
      req.end();
    });
    expect(events.first).toBe('data: one\n\n');
    const [sse] = await list(i.url);
    expect(sse).toMatchObject({ path: '/sse', status: 200, state: 'streaming' });
    sseGate.release();
    expect(await events.rest).toBe('data: one\n\ndata: two\n\n');

    // A 16 MiB download: all of it arrives; the inspector keeps 64 KiB of it and its size.
    const bytes = 16 * 1024 * 1024;
    const download = await fetch(i.through(`/download?bytes=${bytes}`));
    expect((await download.arrayBuffer()).byteLength).toBe(bytes);

    // Chunked upload: the app gets the first chunk before the visitor sends the second.
    uploadFirstChunk = latch<number>();
    const answer = new Promise<string>((resolve, reject) => {
      const req = request(i.through('/upload'), { method: 'POST', headers: { 'content-type': 'text/plain' } }, (res) => {
        let out = '';
        res.on('data', (c: Buffer) => (out += c.toString()));
        res.on('end', () => resolve(out));
      });
      req.on('error', reject);
      req.write('first chunk;');
      void uploadFirstChunk.promise.then(() => req.end('second chunk'));
    });
    expect(await uploadFirstChunk.promise).toBe('first chunk;'.length);
    expect(JSON.parse(await answer)).toEqual({ method: 'POST', url: '/upload', size: 'first chunk;second chunk'.length });

    const byPath = new Map((await list(i.url)).map((r) => [r.path, r.id]));
    const dl = await finished(i.url, byPath.get(`/download?bytes=${bytes}`)!);
    expect(dl.responseSize).toBe(bytes);
    expect(dl.response!.body).toMatchObject({ size: bytes, omitted: 'binary', kind: 'binary' });
    const up = await finished(i.url, byPath.get('/upload')!);
    expect(up.request.body).toMatchObject({ kind: 'text', text: 'first chunk;second chunk' });
    expect(i.store.bytes).toBeLessThan(256 * 1024);
  });

  it('carries a WebSocket end to end (handshake and frames both ways) and records the upgrade', async () => {
    const i = await inspector();
    const ws = await connectWebSocket(`ws://127.0.0.1:${i.proxyPort}/socket?room=1`);
    ws.send('hello');
    expect(await ws.next()).toBe('hello');
    ws.send('ünïcode ✓');
    expect(await ws.next()).toBe('ünïcode ✓');
    await ws.close();
    const [rec] = await list(i.url);
    const d = await finished(i.url, rec!.id);
    expect(d).toMatchObject({ method: 'GET', path: '/socket?room=1', status: 101, upgrade: 'websocket', state: 'complete' });
    expect(header(d.request.headers, 'upgrade')).toBe('websocket');
  });

  it('answers a 502 page naming the local port when the app is down, and records it', async () => {
    const closed = createNetServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const deadPort = (closed.address() as { port: number }).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const i = await inspector({ appPort: deadPort });
    const res = await fetch(i.through('/anything'), { method: 'POST', body: 'lost' });
    expect(res.status).toBe(502);
    const page = await res.text();
    expect(page).toContain(`localhost:${deadPort}`);
    expect(page).toContain('connection refused');
    const [rec] = await list(i.url);
    expect(rec).toMatchObject({ method: 'POST', path: '/anything', status: 502, state: 'error' });
    const d = await finished(i.url, rec!.id);
    expect(d.error).toContain(`localhost:${deadPort}`);
    expect(d.request.body).toMatchObject({ text: 'lost' });
    // A WebSocket to a dead app gets the same answer.
    await expect(connectWebSocket(`ws://127.0.0.1:${i.proxyPort}/ws`)).rejects.toThrow('HTTP 502');
  });
});

describe('the recording proxy and kept-alive connections to the app', () => {
  it('sends a request without a body once more when the app resets the kept-alive connection it went out on; one with a body gets the 502', async () => {
    // A raw app: on its first connection that carries a request it answers one and resets the connection at
    // the next (an app closing an idle connection just as the proxy reuses it); after that it answers.
    const seen: string[] = [];
    let connections = 0;
    const raw = createNetServer((socket) => {
      // Numbered by the first request on them (the proxy's probes of the port carry none).
      let n = 0;
      let answered = 0;
      let buffer = '';
      socket.on('data', (chunk: Buffer) => {
        n ||= ++connections;
        buffer += chunk.toString('latin1');
        for (let end = buffer.indexOf('\r\n\r\n'); end !== -1; end = buffer.indexOf('\r\n\r\n')) {
          const head = buffer.slice(0, end);
          const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
          if (buffer.length < end + 4 + length) return;
          buffer = buffer.slice(end + 4 + length);
          seen.push(`${n} ${head.split(' ').slice(0, 2).join(' ')}`);
          if (n === 1 && answered === 1) {
            socket.resetAndDestroy();
            return;
          }
          answered += 1;
          socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok');
        }
      });
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
    try {
      const i = await inspector({ appPort: (raw.address() as { port: number }).port });
      expect(await (await fetch(i.through('/a'))).text()).toBe('ok');
      const b = await fetch(i.through('/b'));
      expect([b.status, await b.text()]).toEqual([200, 'ok']);
      expect(seen).toEqual(['1 GET /a', '1 GET /b', '2 GET /b']);
      const [rec] = await list(i.url);
      expect(await finished(i.url, rec!.id)).toMatchObject({ path: '/b', status: 200, state: 'complete' });

      // Again with a body: not sent twice (the app may have acted on it); the visitor gets the 502.
      connections = 0;
      seen.length = 0;
      await i.close();
      const j = await inspector({ appPort: (raw.address() as { port: number }).port });
      expect(await (await fetch(j.through('/c'), { method: 'POST', body: 'one' })).text()).toBe('ok');
      const d = await fetch(j.through('/d'), { method: 'POST', body: 'two' });
      expect(d.status).toBe(502);
      expect(seen).toEqual(['1 POST /c', '1 POST /d']);
    } finally {
      await new Promise<void>((resolve) => raw.close(() => resolve()));
    }
  });
});

describe('the inspector keeps memory bounded', () => {
  it('keeps only the last N exchanges, newest first', async () => {
    const i = await inspector({ appPort, maxExchanges: 10 });
    for (let n = 1; n <= 25; n++) await (await fetch(i.through(`/n/${n}`))).text();
    const recorded = await list(i.url);
    expect(recorded.map((r) => r.path)).toEqual(Array.from({ length: 10 }, (_, k) => `/n/${25 - k}`));
    const first = recorded.at(-1)!.id;
    expect((await api(i.url, `/api/requests/${first - 1}`)).status).toBe(404);
  });

  it('stays within the total memory cap: the oldest bodies are dropped first (their size stays), the newest keep theirs', async () => {
    const cap = 64 * 1024;
    const i = await inspector({ appPort, maxExchanges: 500, bodyCapBytes: 8 * 1024, memoryCapBytes: cap });
    const body = 'b'.repeat(8 * 1024);
    for (let n = 1; n <= 40; n++) {
      await (await fetch(i.through(`/m/${n}`), { method: 'POST', headers: { 'content-type': 'text/plain' }, body })).text();
      expect(i.store.bytes).toBeLessThanOrEqual(cap);
    }
    const recorded = await list(i.url);
    const newest = await finished(i.url, recorded[0]!.id);
    expect(newest.request.body).toMatchObject({ size: body.length, text: body, omitted: null });
    const oldest = await finished(i.url, recorded.at(-1)!.id);
    expect(oldest.request.body).toMatchObject({ size: body.length, omitted: 'dropped' });
    expect(oldest.request.body.text).toBeUndefined();
  });
});

describe('the inspector API', () => {
  it('replays a request, as it was or changed, to the app; the new entry links to its original; DELETE clears', async () => {
    const i = await inspector();
    await (await fetch(i.through('/hooks/pay?attempt=1'), { method: 'POST', headers: { 'content-type': 'application/json', 'x-signature': 'abc' }, body: '{"amount":5}' })).text();
    const [original] = await list(i.url);

    const same = await api<{ id: number }>(i.url, `/api/requests/${original!.id}/replay`, { method: 'POST' });
    expect(same.status).toBe(200);
    const changes = { method: 'PUT', path: '/hooks/pay?attempt=2', headers: [['content-type', 'application/json'], ['x-signature', 'def']], body: '{"amount":6}' };
    const edited = await api<{ id: number }>(i.url, `/api/requests/${original!.id}/replay`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(changes) });
    expect(edited.status).toBe(200);

    expect(received.map((r) => [r.method, r.url, r.headers['x-signature'], r.body.toString()])).toEqual([
      ['POST', '/hooks/pay?attempt=1', 'abc', '{"amount":5}'],
      ['POST', '/hooks/pay?attempt=1', 'abc', '{"amount":5}'],
      ['PUT', '/hooks/pay?attempt=2', 'def', '{"amount":6}'],
    ]);
    const replay = await finished(i.url, edited.body.id);
    expect(replay).toMatchObject({ replayOf: original!.id, method: 'PUT', status: 200, path: '/hooks/pay?attempt=2' });
    expect(replay.response!.body).toMatchObject({ text: JSON.stringify({ method: 'PUT', url: '/hooks/pay?attempt=2', size: 12 }) });
    expect((await finished(i.url, original!.id)).replays.sort()).toEqual([same.body.id, edited.body.id].sort());
    expect((await list(i.url)).map((r) => r.id)).toEqual([edited.body.id, same.body.id, original!.id]);

    const curl = (await finished(i.url, original!.id)).curl;
    expect(curl).toBe(`curl -X 'POST' 'http://localhost:${appPort}/hooks/pay?attempt=1' -H 'content-type: application/json' -H 'x-signature: abc' -H 'accept: */*' -H 'accept-language: *' -H 'sec-fetch-mode: cors' -H 'user-agent: node' --data-binary '{"amount":5}'`);

    expect((await api(i.url, '/api/requests', { method: 'DELETE' })).body).toEqual({ cleared: 3 });
    expect(await list(i.url)).toEqual([]);
    expect((await api(i.url, `/api/requests/${original!.id}`)).status).toBe(404);
  });

  it('refuses to replay a body it did not keep in full unless the replay brings one, and refuses malformed changes', async () => {
    const i = await inspector({ appPort, bodyCapBytes: 16 });
    await (await fetch(i.through('/long'), { method: 'POST', body: 'more than sixteen bytes' })).text();
    const [rec] = await list(i.url);
    const refused = await api<{ error: string }>(i.url, `/api/requests/${rec!.id}/replay`, { method: 'POST' });
    expect(refused.status).toBe(409);
    expect(refused.body.error).toContain('not captured in full');
    const withBody = await api<{ id: number }>(i.url, `/api/requests/${rec!.id}/replay`, { method: 'POST', body: JSON.stringify({ body: 'short' }) });
    expect(withBody.status).toBe(200);
    expect(received.at(-1)!.body.toString()).toBe('short');
    expect((await api(i.url, `/api/requests/${rec!.id}/replay`, { method: 'POST', body: JSON.stringify({ headers: [['bad header', 'x']] }) })).status).toBe(400);
    expect((await api(i.url, `/api/requests/${rec!.id}/replay`, { method: 'POST', body: JSON.stringify({ path: 'no-slash' }) })).status).toBe(400);
    expect((await api(i.url, `/api/requests/${rec!.id}/replay`, { method: 'POST', body: '{not json' })).status).toBe(400);
  });

  it('refuses requests whose Host is not the inspector (DNS rebinding) and cross-site browser requests; its own origin and local scripts are served', async () => {
    const i = await inspector();
    const raw = (path: string, method: string, headers: Record<string, string>) => new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: i.port, path, method, headers }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    const own = `127.0.0.1:${i.port}`;
    expect(await raw('/api/requests', 'GET', { host: own })).toBe(200);
    expect(await raw('/api/requests', 'GET', { host: `localhost:${i.port}` })).toBe(200);
    expect(await raw('/', 'GET', { host: own })).toBe(200);
    expect(await raw('/api/requests', 'GET', { host: `evil.example:${i.port}` })).toBe(403);
    expect(await raw('/', 'GET', { host: 'evil.example' })).toBe(403);
    expect(await raw('/api/requests', 'DELETE', { host: own, origin: 'https://evil.example' })).toBe(403);
    expect(await raw('/api/requests/1/replay', 'POST', { host: own, origin: 'null' })).toBe(403);
    expect(await raw('/api/requests', 'GET', { host: own, 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'no-cors' })).toBe(403);
    expect(await raw('/api/requests', 'DELETE', { host: own, origin: `http://${own}`, 'sec-fetch-site': 'same-origin' })).toBe(200);
    // A link from elsewhere may open the page itself (it shows nothing until its own script asks).
    expect(await raw('/', 'GET', { host: own, 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate' })).toBe(200);
  });

  it('takes the next free port when the one asked for is taken', async () => {
    const blocker = createNetServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const taken = (blocker.address() as { port: number }).port;
    try {
      const i = await inspector({ appPort, inspectPort: taken });
      expect(i.requestedPort).toBe(taken);
      expect(i.port).toBeGreaterThan(taken);
      expect(i.url).toBe(`http://127.0.0.1:${i.port}`);
      expect((await api(i.url, '/api/requests')).status).toBe(200);
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });
});
