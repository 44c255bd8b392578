import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { isLowerCaseUuid, isUuid } from '../../src/util/uuid.js';

describe('uuid checks', () => {
  const id = randomUUID();

  it('isUuid accepts either case and nothing but the 8-4-4-4-12 hex form', () => {
    expect(isUuid(id)).toBe(true);
    expect(isUuid(id.toUpperCase())).toBe(true);
    for (const text of ['', 'not-a-uuid', `${id}x`, ` ${id}`, id.replace(/-/g, ''), `{${id}}`, id.replace(/[0-9a-f]$/, 'g')]) {
      expect(isUuid(text), text).toBe(false);
    }
  });

  it('isLowerCaseUuid accepts only the form randomUUID() writes', () => {
    expect(isLowerCaseUuid(id)).toBe(true);
    expect(isLowerCaseUuid(id.toUpperCase())).toBe(false);
    expect(isLowerCaseUuid(`${id}\n`)).toBe(false);
  });
});
