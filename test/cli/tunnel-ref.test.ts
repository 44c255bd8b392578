import { describe, expect, it } from 'vitest';
import { operatorTarget } from '../../src/cli/commands/tunnels.js';
import { CliError, ExitCode } from '../../src/cli/context.js';

// How `tunnels end <tunnel>` reads its argument (in-process: no broker needed).
describe('operatorTarget', () => {
  it('looks up an id as is, a hostname as typed (any domain), and a slug as a slug', () => {
    expect(operatorTarget('0F8FAD5B-D9CB-469F-A165-70867728950E')).toEqual({ id: '0f8fad5b-d9cb-469f-a165-70867728950e' });
    expect(operatorTarget('My-App.Tunnels.Test.')).toEqual({ hostname: 'my-app.tunnels.test' });
    expect(operatorTarget('my-app.old-domain.example')).toEqual({ hostname: 'my-app.old-domain.example' });
    // A slug is looked up as such: unique among live tunnels in every account, whatever their domains.
    expect(operatorTarget(' my-app ')).toEqual({ slug: 'my-app' });
    expect(operatorTarget('https://my-app.tunnels.test/')).toEqual({ hostname: 'my-app.tunnels.test' });
  });

  it('refuses an empty name as a usage error', () => {
    const error = (() => {
      try {
        operatorTarget('  ');
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(CliError);
    expect((error as CliError).exitCode).toBe(ExitCode.usage);
  });
});
