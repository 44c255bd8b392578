import { describe, expect, it } from 'vitest';
import { redactUrl } from '../../src/logging/redact-url.js';

describe('redactUrl', () => {
  it('masks the password and secret-looking query parameters, and keeps the rest', () => {
    expect(redactUrl('postgresql://app:hunter2@db.internal:5432/tunnels')).toBe('postgresql://app:***@db.internal:5432/tunnels');
    expect(redactUrl('redis://127.0.0.1:6379')).toBe('redis://127.0.0.1:6379');
    const shown = redactUrl('postgresql://app@db/tunnels?sslmode=require&password=hunter2&sslpassword=hunter3&auth_token=hunter4');
    expect(shown).toBe('postgresql://app@db/tunnels?sslmode=require&password=***&sslpassword=***&auth_token=***');
  });

  it('shows nothing of a URL without a host or one that does not parse: the password could be anywhere in it', () => {
    expect(redactUrl('redis:/:hunter2@127.0.0.1')).toBe('redis:<redacted: no host>');
    expect(redactUrl('redis://:hunter2@host:notaport')).toBe('<unparseable url>');
    expect(redactUrl('postgresql://u:hunter2@/db?host=/var/run/postgresql')).toBe('<unparseable url>');
  });
});
