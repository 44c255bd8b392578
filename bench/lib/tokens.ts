/**
 * Bearer tokens for the heartbeat load: one per tunnel, as its agent would send.
 *
 * - `heartbeat`: the tunnel's own heartbeat token (what POST /v1/tunnels hands an agent),
 *   when this checkout has them (src/auth/heartbeat-token.ts);
 * - `access`: the owner's access token (one per user), which every checkout accepts.
 */
import { signAccessToken } from '../../src/auth/access-token.js';
import type { SeedTunnel } from './seed.js';

export type TokenKind = 'heartbeat' | 'access';

interface HeartbeatTokenModule {
  HeartbeatTokens: new (secret: string) => { sign(userId: string, tunnelId: string): string };
}

/** The heartbeat-token signer of this checkout, or null if it has none. */
export async function loadHeartbeatSigner(secret: string): Promise<((userId: string, tunnelId: string) => string) | null> {
  try {
    const mod = (await import('../../src/auth/heartbeat-token.js' as string)) as Partial<HeartbeatTokenModule>;
    if (!mod.HeartbeatTokens) return null;
    const tokens = new mod.HeartbeatTokens(secret);
    return (userId, tunnelId) => tokens.sign(userId, tunnelId);
  } catch {
    return null;
  }
}

/** `Bearer …` for each tunnel, in order. Falls back to access tokens when heartbeat tokens are unavailable. */
export async function bearerHeaders(secret: string, tunnels: readonly SeedTunnel[], wanted: TokenKind): Promise<{ kind: TokenKind; headers: string[] }> {
  const heartbeat = wanted === 'heartbeat' ? await loadHeartbeatSigner(secret) : null;
  if (heartbeat) return { kind: 'heartbeat', headers: tunnels.map((t) => `Bearer ${heartbeat(t.ownerId, t.id)}`) };
  const byUser = new Map<string, string>();
  const headers = tunnels.map((t) => {
    let token = byUser.get(t.ownerId);
    if (token === undefined) {
      token = signAccessToken(secret, t.ownerId, 3600);
      byUser.set(t.ownerId, token);
    }
    return `Bearer ${token}`;
  });
  return { kind: 'access', headers };
}
