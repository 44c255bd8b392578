import { randomUUID } from 'node:crypto';
import { createSigner } from 'fast-jwt';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/access-token.js';
import { HeartbeatTokens } from '../../src/auth/heartbeat-token.js';
import { HEADER_CACHE_SIZE, TokenVerifier } from '../../src/auth/token-verifier.js';
import { loadBootConfig } from '../../src/config/env.js';

const SECRET = 'token-verifier-test-secret-0123456789abcdef';

function verifier(): TokenVerifier {
  const { jwt } = loadBootConfig({ NODE_ENV: 'test', JWT_SECRET: SECRET });
  return new TokenVerifier({ jwt, heartbeatTokens: new HeartbeatTokens(SECRET), logger: pino({ level: 'silent' }) });
}

describe('TokenVerifier header decoding', () => {
  it('routes each token by its own header, whether its header was seen before or not', async () => {
    const v = verifier();
    const tunnelId = randomUUID();
    const heartbeat = new HeartbeatTokens(SECRET).sign('alice', tunnelId);
    // The same header many times, interleaved with access tokens (another header).
    for (let i = 0; i < 3; i++) {
      expect(await v.verify(heartbeat)).toMatchObject({ kind: 'heartbeat', userId: 'alice', tunnelId });
      expect(await v.verify(signAccessToken(SECRET, `bob-${i}`, 60))).toMatchObject({ kind: 'user', userId: `bob-${i}` });
    }
    // A header claiming "none" is refused every time, also once it has been seen.
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${Buffer.from('{"sub":"eve"}').toString('base64url')}.`;
    await expect(v.verify(none)).rejects.toThrow();
    await expect(v.verify(none)).rejects.toThrow();
  });

  it('past the remembered headers, tokens are still verified by their own header', async () => {
    const v = verifier();
    // Distinct headers (a kid each), more than are remembered; every one verifies.
    const tokens = Array.from({ length: HEADER_CACHE_SIZE + 10 }, (_, i) =>
      createSigner({ key: SECRET, algorithm: 'HS256', kid: `k${i}`, expiresIn: 60_000 })({ sub: `user-${i}` }));
    for (const [i, token] of tokens.entries()) expect(await v.verify(token)).toMatchObject({ kind: 'user', userId: `user-${i}` });
    // A heartbeat token after them is still recognised as one.
    const tunnelId = randomUUID();
    expect(await v.verify(new HeartbeatTokens(SECRET).sign('carol', tunnelId))).toMatchObject({ kind: 'heartbeat', tunnelId });
  });
});
