import { describe, expect, it } from 'vitest';
import { parseTunnelRef } from '../../src/cli/commands/tunnels.js';
import { CliError, ExitCode } from '../../src/cli/context.js';

// How `tunnels end <tunnel>` reads its argument (in-process: no broker needed).
describe('parseTunnelRef', () => {
  it('reads a UUID as an id, a dotted name as a hostname, anything else as a slug under TUNNEL_DOMAIN', () => {
    expect(parseTunnelRef('0F8FAD5B-D9CB-469F-A165-70867728950E', 'tunnels.test')).toEqual({ id: '0f8fad5b-d9cb-469f-a165-70867728950e' });
    expect(parseTunnelRef('My-App.Tunnels.Test.', 'tunnels.test')).toEqual({ hostname: 'my-app.tunnels.test' });
    expect(parseTunnelRef(' my-app ', 'tunnels.test')).toEqual({ hostname: 'my-app.tunnels.test' });
  });

  it('refuses an empty name as a usage error', () => {
    const error = (() => {
      try {
        parseTunnelRef('  ', 'tunnels.test');
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(CliError);
    expect((error as CliError).exitCode).toBe(ExitCode.usage);
  });
});
