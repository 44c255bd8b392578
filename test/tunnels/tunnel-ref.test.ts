import { describe, expect, it } from 'vitest';
import { parseTunnelRef, tunnelRefText } from '../../src/tunnels/tunnel-ref.js';

// The one reading of a tunnel's name, shared by the API, the operator CLI and the agent.
describe('parseTunnelRef', () => {
  it('reads a UUID as an id, a dotted name as a hostname, anything else as a slug, in any case', () => {
    expect(parseTunnelRef('0F8FAD5B-D9CB-469F-A165-70867728950E')).toEqual({ id: '0f8fad5b-d9cb-469f-a165-70867728950e' });
    expect(parseTunnelRef('My-App.Tunnels.Test')).toEqual({ hostname: 'my-app.tunnels.test' });
    expect(parseTunnelRef(' My-App ')).toEqual({ slug: 'my-app' });
  });

  it('drops a trailing dot, and reads a URL as its hostname', () => {
    expect(parseTunnelRef('my-app.tunnels.test.')).toEqual({ hostname: 'my-app.tunnels.test' });
    expect(parseTunnelRef('https://My-App.Tunnels.Test/some/path?q=1')).toEqual({ hostname: 'my-app.tunnels.test' });
    expect(parseTunnelRef('http://my-app.tunnels.test.:8080/')).toEqual({ hostname: 'my-app.tunnels.test' });
  });

  it('reads a UUID as an id even where a slug could be one (an id is used as is)', () => {
    expect(parseTunnelRef('0f8fad5b-d9cb-469f-a165-70867728950e.')).toEqual({ id: '0f8fad5b-d9cb-469f-a165-70867728950e' });
  });

  it('names nothing when empty, and leaves what is not a URL as typed', () => {
    expect(parseTunnelRef('')).toBeUndefined();
    expect(parseTunnelRef('  .')).toBeUndefined();
    expect(parseTunnelRef('https://')).toEqual({ slug: 'https://' });
  });

  it('gives back the text to send: the id, the hostname or the slug', () => {
    for (const text of ['0f8fad5b-d9cb-469f-a165-70867728950e', 'my-app.tunnels.test', 'my-app']) expect(tunnelRefText(parseTunnelRef(text)!)).toBe(text);
  });
});
