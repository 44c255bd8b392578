import http from 'node:http';
import type { AddressInfo } from 'node:net';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeHttpFetch } from '../../src/cloudflare/node-http-fetch.js';

/** A server that answers by path: echo, gzip, 204, a slow answer, and a response that never ends. */
let server: http.Server;
let base: string;
beforeAll(async () => {
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/echo') {
        res.setHeader('content-type', 'application/json');
        res.setHeader('x-multi', ['a', 'b']);
        res.statusCode = 201;
        res.end(JSON.stringify({ method: req.method, body: Buffer.concat(chunks).toString(), auth: req.headers.authorization, encoding: req.headers['accept-encoding'] }));
      } else if (req.url === '/gzip') {
        res.setHeader('content-encoding', 'gzip');
        res.setHeader('content-type', 'application/json');
        res.end(zlib.gzipSync(JSON.stringify({ compressed: true })));
      } else if (req.url === '/empty') {
        res.statusCode = 204;
        res.end();
      } else if (req.url === '/hang') {
        res.write('{"partial":');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

describe('the SDK\'s node:http fetch', () => {
  const fetch = createNodeHttpFetch();

  it('sends the method, headers and body, and answers with status, all headers and the body', async () => {
    const res = await fetch(`${base}/echo`, { method: 'POST', headers: new Headers({ authorization: 'Bearer t' }), body: '{"a":1}' });
    expect(res.status).toBe(201);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(res.headers.get('x-multi')).toBe('a, b');
    expect(await res.json()).toEqual({ method: 'POST', body: '{"a":1}', auth: 'Bearer t', encoding: 'gzip, deflate, br' });
  });

  it('decompresses a gzip answer as fetch does', async () => {
    const res = await fetch(`${base}/gzip`);
    expect(res.headers.get('content-encoding')).toBeNull();
    expect(await res.json()).toEqual({ compressed: true });
  });

  it('answers 204 with no body', async () => {
    const res = await fetch(`${base}/empty`, { method: 'DELETE' });
    expect(res.status).toBe(204);
    expect(await res.text()).toBe('');
  });

  it('rejects with the signal\'s AbortError when it fires mid-answer, before or after headers', async () => {
    const controller = new AbortController();
    const pending = fetch(`${base}/hang`, { signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    await expect(fetch(`${base}/echo`, { signal: AbortSignal.abort() })).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('fails a connection it cannot make as fetch would, with an error to retry', async () => {
    await expect(fetch('http://127.0.0.1:1/nothing')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});
