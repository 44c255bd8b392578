import { randomInt } from 'node:crypto';

/** One DNS label: 1-63 characters of a-z, 0-9 and inner hyphens. */
export const SLUG_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** The same, before lower-casing: what the HTTP schema accepts. */
export const REQUESTED_SLUG_PATTERN = '^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$';

export const RANDOM_SLUG_LENGTH = 10;
/** How many random slugs a create tries before answering SLUG_EXHAUSTED. */
export const RANDOM_SLUG_ATTEMPTS = 8;

// Letters and digits only, minus look-alikes (0/o, 1/l/i), so a slug can be read aloud.
const ALPHABET = 'abcdefghjkmnpqrstuvwxyz23456789';

export type SlugProblem = 'invalid' | 'punycode' | 'reserved';

export type SlugCheck = { ok: true; slug: string } | { ok: false; problem: SlugProblem };

/** Lower-cases a requested slug and checks it is a DNS label we are willing to hand out. */
export function normalizeRequestedSlug(requested: string, reserved: ReadonlySet<string>): SlugCheck {
  const slug = requested.toLowerCase();
  if (!SLUG_PATTERN.test(slug)) return { ok: false, problem: 'invalid' };
  // IDNA labels can spell look-alikes of other names (homograph phishing).
  if (slug.startsWith('xn--')) return { ok: false, problem: 'punycode' };
  if (reserved.has(slug)) return { ok: false, problem: 'reserved' };
  return { ok: true, slug };
}

/** A random slug from the CSPRNG: 10 characters of a 31-letter alphabet is ~49 bits. */
export function randomSlug(): string {
  let slug = '';
  for (let i = 0; i < RANDOM_SLUG_LENGTH; i++) slug += ALPHABET[randomInt(ALPHABET.length)];
  return slug;
}
