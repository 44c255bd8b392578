import { createSigner } from 'fast-jwt';
import { describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/access-token.js';
import { TEST_JWT_SECRET, useTestBroker } from '../helpers/broker.js';

const broker = useTestBroker();

const nowSec = () => Math.floor(Date.now() / 1000);
const hs256 = (payload: object, key = TEST_JWT_SECRET) => createSigner({ key, algorithm: 'HS256', noTimestamp: true })(payload);

const routes: Array<[string, string]> = [
  ['POST', '/v1/tunnels'],
  ['GET', '/v1/tunnels'],
  ['GET', '/v1/tunnels/00000000-0000-4000-8000-000000000000'],
  ['POST', '/v1/tunnels/00000000-0000-4000-8000-000000000000/heartbeat'],
  ['DELETE', '/v1/tunnels/00000000-0000-4000-8000-000000000000'],
];

const badCredentials: Array<[string, Record<string, string>]> = [
  ['no Authorization header', {}],
  ['a non-Bearer scheme', { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }],
  ['an empty bearer token', { authorization: 'Bearer ' }],
  ['garbage', { authorization: 'Bearer not.a.jwt' }],
  ['the wrong secret', { authorization: `Bearer ${hs256({ sub: 'u', exp: nowSec() + 60 }, 'another-secret-of-at-least-32-characters!!')}` }],
  ['an expired token', { authorization: `Bearer ${hs256({ sub: 'u', exp: nowSec() - 10 })}` }],
  ['no exp claim', { authorization: `Bearer ${hs256({ sub: 'u' })}` }],
  ['no sub claim', { authorization: `Bearer ${hs256({ exp: nowSec() + 60 })}` }],
  ['an empty sub', { authorization: `Bearer ${hs256({ sub: '', exp: nowSec() + 60 })}` }],
  ['a numeric sub', { authorization: `Bearer ${hs256({ sub: 42, exp: nowSec() + 60 })}` }],
  ['a sub of 201 characters', { authorization: `Bearer ${hs256({ sub: 'u'.repeat(201), exp: nowSec() + 60 })}` }],
  // Found by test/http/fuzz.test.ts: PostgreSQL text cannot hold NUL, so this was a 500.
  ['a sub with a NUL character', { authorization: `Bearer ${hs256({ sub: 'u\u0000', exp: nowSec() + 60 })}` }],
  ['a sub with a control character', { authorization: `Bearer ${hs256({ sub: 'u\u001b[31m', exp: nowSec() + 60 })}` }],
  // UTF-8 turns every unpaired surrogate into U+FFFD: two such ids would be one owner.
  ['a sub with an unpaired surrogate', { authorization: `Bearer ${hs256({ sub: 'u\ud800', exp: nowSec() + 60 })}` }],
  ['alg none', { authorization: `Bearer ${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'u', exp: nowSec() + 60 })).toString('base64url')}.` }],
  ['HS512 instead of HS256', { authorization: `Bearer ${createSigner({ key: TEST_JWT_SECRET, algorithm: 'HS512' })({ sub: 'u', exp: nowSec() + 60 })}` }],
];

describe('bearer authentication on every /v1 route', () => {
  for (const [method, url] of routes) {
    for (const [name, headers] of badCredentials) {
      it(`${method} ${url.replace(/[0-9a-f-]{36}/, ':id')} refuses ${name} with 401 UNAUTHORIZED`, async () => {
        const res = await broker.app.inject({ method: method as 'GET', url, headers, payload: method === 'POST' && url === '/v1/tunnels' ? { port: 3000 } : undefined });
        expect(res.statusCode).toBe(401);
        expect(res.json()).toMatchObject({ code: 'UNAUTHORIZED', message: expect.any(String) });
        expect(res.headers['www-authenticate']).toBe('Bearer');
      });
    }
  }

  it('accepts any other subject up to 200 characters, unicode included', async () => {
    for (const sub of ['u'.repeat(200), 'caf\u00e9 \u{1f600} \u4e2d\u6587', "o'brien; DROP TABLE tunnels"]) {
      const res = await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: { authorization: `Bearer ${hs256({ sub, exp: nowSec() + 60 })}` } });
      expect(res.statusCode, sub).toBe(200);
    }
  });

  it('will not sign a token for a user id the API would refuse', () => {
    for (const bad of ['', 'u'.repeat(201), 'u\u0000', 'u\ud800', 'u\n']) expect(() => signAccessToken(TEST_JWT_SECRET, bad, 60)).toThrow();
  });

  it('accepts a token made by the token command, with "bearer" in any case', async () => {
    const token = signAccessToken(TEST_JWT_SECRET, 'alice', 60);
    for (const scheme of ['Bearer', 'bearer']) {
      const res = await broker.app.inject({ method: 'GET', url: '/v1/tunnels', headers: { authorization: `${scheme} ${token}` } });
      expect(res.statusCode).toBe(200);
    }
  });
});
