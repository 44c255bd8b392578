import { describe, expect, it } from 'vitest';
import { ERROR_CATALOGUE, ERROR_CODES } from '../../src/errors/catalogue.js';
import { useTestBroker } from '../helpers/broker.js';

const broker = useTestBroker();

describe('error catalogue', () => {
  it('gives every code an HTTP error status and a message', () => {
    for (const code of ERROR_CODES) {
      expect(ERROR_CATALOGUE[code].status).toBeGreaterThanOrEqual(400);
      expect(ERROR_CATALOGUE[code].message.length).toBeGreaterThan(0);
    }
  });
});

describe('error responses', () => {
  it('a 5xx reveals nothing internal', async () => {
    // Make PostgreSQL refuse the query in a way that is not an outage: the table is gone.
    await broker.app.prisma.$executeRawUnsafe('ALTER TABLE tunnels RENAME TO tunnels_hidden');
    try {
      const res = await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: broker.auth('u') });
      expect(res.statusCode).toBe(500);
      expect(res.json()).toEqual({ code: 'INTERNAL_ERROR', message: ERROR_CATALOGUE.INTERNAL_ERROR.message });
      expect(res.body).not.toMatch(/tunnels|prisma|postgres|relation|stack/i);
      // The cause is in the log for operators.
      expect(broker.logs.events('request.failed').length).toBeGreaterThan(0);
    } finally {
      await broker.app.prisma.$executeRawUnsafe('ALTER TABLE tunnels_hidden RENAME TO tunnels');
    }
  });

  it('a body over the size limit is 413 PAYLOAD_TOO_LARGE', async () => {
    const res = await broker.app.inject({
      method: 'POST', url: '/v1/tunnels', headers: { ...broker.auth('u'), 'content-type': 'application/json' },
      payload: JSON.stringify({ port: 3000, pad: 'x'.repeat(64 * 1024) }),
    });
    expect(res.statusCode).toBe(413);
    expect(res.json().code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('a body of an unknown media type is 415 UNSUPPORTED_MEDIA_TYPE', async () => {
    const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: { ...broker.auth('u'), 'content-type': 'application/xml' }, payload: '<port>3000</port>' });
    expect(res.statusCode).toBe(415);
    expect(res.json().code).toBe('UNSUPPORTED_MEDIA_TYPE');
  });

  it('a text body is not a JSON object: 400 INVALID_INPUT', async () => {
    const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: { ...broker.auth('u'), 'content-type': 'text/plain' }, payload: '{"port":3000}' });
    expect(res.statusCode).toBe(400);
    expect(res.json().code).toBe('INVALID_INPUT');
  });

  // Found by test/http/fuzz.test.ts: the router answered these in Fastify's own format.
  it('a malformed percent-encoding in the path is 400 INVALID_INPUT in the envelope', async () => {
    for (const url of ['/v1/tunnels/%', '/v1/tunnels/%E0%A4%A/heartbeat', '/%zz']) {
      const res = await broker.app.inject({ method: 'GET', url, headers: broker.auth('u') });
      expect(res.statusCode, url).toBe(400);
      expect(res.json(), url).toEqual({ code: 'INVALID_INPUT', message: expect.any(String) });
    }
  });

  it('a path parameter over the router limit is 400 INVALID_INPUT in the envelope', async () => {
    const res = await broker.app.inject({ method: 'GET', url: `/v1/tunnels/${'a'.repeat(5_000)}`, headers: broker.auth('u') });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toEqual({ code: 'INVALID_INPUT', message: expect.any(String) });
    expect(res.body).not.toContain('aaaa');
  });

  it('a prototype-poisoning body is refused as INVALID_INPUT', async () => {
    const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: { ...broker.auth('u'), 'content-type': 'application/json' }, payload: '{"port":3000,"__proto__":{"admin":true}}' });
    expect(res.statusCode).toBe(400);
    expect(res.json().code).toBe('INVALID_INPUT');
  });
});
