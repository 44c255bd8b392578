import http from 'node:http';
import https from 'node:https';
import { promisify } from 'node:util';
import zlib from 'node:zlib';

type Fetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export const NODE_HTTP_FETCH_DEFAULTS = {
  /** Concurrent connections per upstream host; more requests wait for a free one. */
  maxSockets: 32,
  /** A response body larger than this is refused: no Cloudflare API answer comes near it. */
  maxResponseBytes: 16 * 1024 * 1024,
} as const;

const decoders: Record<string, (buffer: Buffer) => Promise<Buffer>> = {
  gzip: promisify(zlib.gunzip),
  deflate: promisify(zlib.inflate),
  br: promisify(zlib.brotliDecompress),
};

/**
 * A `fetch` for the Cloudflare SDK on node:http(s) with keep-alive agents. Node's own fetch
 * (undici behind the WHATWG streams) costs about a third more CPU per call; the reaper makes
 * three calls per tunnel it ends, so this is most of its CPU budget (bench/results.md). It
 * covers what the SDK sends (a method, headers, a string or byte body, an AbortSignal) and
 * buffers the answer into a standard Response, decompressing it as fetch would; anything
 * else (a stream or form body, a Request object) goes to the global fetch.
 */
export function createNodeHttpFetch(options: { maxSockets?: number } = {}): Fetch {
  const maxSockets = options.maxSockets ?? NODE_HTTP_FETCH_DEFAULTS.maxSockets;
  const agents = { 'http:': new http.Agent({ keepAlive: true, maxSockets }), 'https:': new https.Agent({ keepAlive: true, maxSockets }) };
  return (input, init = {}) => {
    const body = init.body;
    if (input instanceof Request || (body != null && typeof body !== 'string' && !(body instanceof Uint8Array))) return globalThis.fetch(input, init);
    const url = input instanceof URL ? input : new URL(input);
    const protocol = url.protocol as 'http:' | 'https:';
    if (protocol !== 'http:' && protocol !== 'https:') return globalThis.fetch(input, init);
    const signal = init.signal ?? undefined;
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    const headers: Record<string, string> = { 'accept-encoding': 'gzip, deflate, br' };
    new Headers(init.headers).forEach((value, key) => {
      headers[key] = value;
    });
    return new Promise<Response>((resolve, reject) => {
      const request = (protocol === 'https:' ? https : http).request(url, { method: init.method ?? 'GET', headers, agent: agents[protocol] }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > NODE_HTTP_FETCH_DEFAULTS.maxResponseBytes) request.destroy(new Error(`the response from ${url.host} exceeded ${NODE_HTTP_FETCH_DEFAULTS.maxResponseBytes} bytes`));
          else chunks.push(chunk);
        });
        res.on('error', reject);
        res.on('end', () => {
          const responseHeaders = new Headers();
          for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) responseHeaders.append(res.rawHeaders[i]!, res.rawHeaders[i + 1]!);
          const decode = decoders[(res.headers['content-encoding'] ?? '').trim().toLowerCase()];
          const raw = Buffer.concat(chunks);
          (decode && raw.length > 0 ? decode(raw) : Promise.resolve(raw)).then((decoded) => {
            if (decode) {
              responseHeaders.delete('content-encoding');
              responseHeaders.delete('content-length');
            }
            const status = res.statusCode ?? 502;
            const empty = status === 204 || status === 304 || decoded.length === 0;
            resolve(new Response(empty ? null : decoded, { status, statusText: res.statusMessage, headers: responseHeaders }));
          }, reject);
        });
      });
      request.on('error', reject);
      if (signal) {
        const onAbort = () => request.destroy(abortReason(signal));
        signal.addEventListener('abort', onAbort, { once: true });
        request.once('close', () => signal.removeEventListener('abort', onAbort));
      }
      request.end(body ?? undefined);
    });
  };
}

/** What fetch rejects with when its signal fires: the signal's reason, an AbortError by default. */
function abortReason(signal: AbortSignal): Error {
  return (signal.reason as Error | undefined) ?? new DOMException('This operation was aborted', 'AbortError');
}
