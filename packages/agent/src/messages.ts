import type { BrokerError } from './broker-client.js';

/** Where tokens come from, said the same way everywhere. */
export const HOW_TO_GET_A_TOKEN =
  'Ask an operator for a new one (on the broker host: `npm run token -- <user>`, or `tunnel-broker token create --user <user>`), then\n' +
  '  tunnel login --server <url>    (asks for the token; or pipe it in with --token -, or set TUNNEL_BROKER_TOKEN)';

export const HOW_TO_INSTALL_CLOUDFLARED =
  'Install it (https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/downloads/):\n' +
  '  macOS: brew install cloudflared\n' +
  '  Debian/Ubuntu: see the page above for the apt repository, or download the .deb from https://github.com/cloudflare/cloudflared/releases\n' +
  '  Windows: winget install --id Cloudflare.cloudflared\n' +
  'or point the agent at it with --cloudflared /path/to/cloudflared (or CLOUDFLARED_PATH).';

/** The `exp` of a JWT, read without verifying it: only to say "your token expired at ...". */
export function tokenExpiry(jwt: string): Date | undefined {
  const payload = jwt.split('.')[1];
  if (!payload) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' ? new Date(claims.exp * 1000) : undefined;
  } catch {
    return undefined;
  }
}

export function describeDuration(seconds: number): string {
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  const rest = s % 60;
  if (m < 60) return rest ? `${m} min ${rest} s` : `${m} min`;
  const h = Math.floor(m / 60);
  return `${h} h ${m % 60} min`;
}

export function unauthorizedMessage(error: BrokerError, token: string, tokenSource: string, server: string, now = Date.now()): string {
  const exp = tokenExpiry(token);
  const why = exp && exp.getTime() <= now
    ? `The access token (from ${tokenSource}) expired at ${exp.toISOString()}.`
    : `The broker at ${server} rejected the access token (from ${tokenSource}): ${error.message}`;
  return `${why}\n${HOW_TO_GET_A_TOKEN}`;
}

export interface CreateFailureContext {
  server: string;
  slug: string | undefined;
  token: string;
  tokenSource: string;
  /** Set when the slug is held by one of the caller's own tunnels. */
  ownHolder?: { id: string; hostname: string } | undefined;
}

/** The one actionable sentence (or three) for a create the broker refused. */
export function createFailureMessage(error: BrokerError, ctx: CreateFailureContext): string {
  const wait = error.retryAfterSec !== undefined ? describeDuration(error.retryAfterSec) : undefined;
  if (error.status === 401) return unauthorizedMessage(error, ctx.token, ctx.tokenSource, ctx.server);
  if (error.code === 'TUNNEL_SLUG_CONFLICT') {
    if (ctx.ownHolder) {
      return `The slug "${ctx.slug}" is in use by your own tunnel ${ctx.ownHolder.hostname} (${ctx.ownHolder.id}), probably another agent.\n` +
        `Stop it with: tunnel stop ${ctx.ownHolder.hostname}   or pick another --slug.`;
    }
    const reserved = error.details?.reason === 'reserved';
    return reserved
      ? `The slug "${ctx.slug}" is reserved. Pick another --slug, or leave it out for a random one.`
      : `The slug "${ctx.slug}" is taken. Pick another --slug, or leave it out for a random one.`;
  }
  if (error.code === 'TUNNEL_LIMIT_EXCEEDED') {
    return `${error.message} A slot frees when one of your tunnels ends.\n` +
      'See them with `tunnel list` and end one with `tunnel stop <id|hostname>`.';
  }
  if (error.status === 429) {
    return `The broker is rate-limiting your tunnel creations. ${wait ? `Wait ${wait} and try again.` : 'Wait a minute and try again.'}\n(${error.message})`;
  }
  if (error.code === 'INVALID_PORT' || error.code === 'INVALID_INPUT') return `The broker refused the request: ${error.message}`;
  if (error.unreachable) return `${error.message}\nIs the broker running, and is --server / TUNNEL_BROKER_URL right (${ctx.server})?`;
  const retry = wait ? ` Retry in ${wait}.` : ' Retry in a moment.';
  return `The broker could not create the tunnel (${error.status ?? 'no answer'}${error.code ? ` ${error.code}` : ''}): ${error.message}${error.transient ? retry : ''}`;
}
