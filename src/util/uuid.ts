/** The 8-4-4-4-12 hex form of a UUID, lower case, unanchored: for building larger patterns. */
export const UUID_PATTERN = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';

const ANY_CASE_RE = new RegExp(`^${UUID_PATTERN}$`, 'i');
const LOWER_CASE_RE = new RegExp(`^${UUID_PATTERN}$`);

/** A UUID in either case: what a person or a client may type for an id. */
export function isUuid(text: string): boolean {
  return ANY_CASE_RE.test(text);
}

/**
 * A UUID exactly as randomUUID() writes it (lower case): the only form the broker itself
 * produces, so where a value must have come from the broker, any other form is not its own.
 */
export function isLowerCaseUuid(text: string): boolean {
  return LOWER_CASE_RE.test(text);
}
