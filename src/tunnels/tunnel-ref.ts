import { isLowerCaseUuid } from '../util/uuid.js';

/**
 * How people and clients name a tunnel: by its id, its hostname or its slug. One reading for
 * the API (GET and DELETE /v1/tunnels/:tunnelId), the operator CLI (`tunnels end`) and the
 * agent (`stop`, `list`), so a name that works in one works in all.
 */

const URL_PREFIX = /^https?:\/\//;

export type TunnelRef = { id: string } | { hostname: string } | { slug: string };

/**
 * Trimmed and lower-cased, without a trailing dot; a URL (`https://host/...`, what `connect`
 * prints) stands for its hostname. A UUID is an id, even when some slug looks like one; a name
 * with a dot is a hostname; anything else is a slug. Undefined for an empty name.
 */
export function parseTunnelRef(text: string): TunnelRef | undefined {
  let ref = text.trim().toLowerCase();
  if (URL_PREFIX.test(ref)) {
    try {
      ref = new URL(ref).hostname;
    } catch {
      // Not a URL after all: read as typed (it names no tunnel).
    }
  }
  ref = ref.replace(/\.$/, '');
  if (ref === '') return undefined;
  if (isLowerCaseUuid(ref)) return { id: ref };
  return ref.includes('.') ? { hostname: ref } : { slug: ref };
}

/** The ref as one path segment or one word: the id, the hostname or the slug. */
export function tunnelRefText(ref: TunnelRef): string {
  return 'id' in ref ? ref.id : 'hostname' in ref ? ref.hostname : ref.slug;
}
