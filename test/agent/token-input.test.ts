import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { MAX_TOKEN_CHARS, readToken } from '../../packages/agent/src/token-input.js';

/** A stand-in terminal: records raw-mode switches; what is typed is written to it. */
function terminal() {
  const input = Object.assign(new PassThrough(), { isTTY: true, modes: [] as boolean[] });
  Object.assign(input, { setRawMode: (mode: boolean) => input.modes.push(mode) });
  return input as typeof input & { setRawMode(mode: boolean): void };
}

function capture() {
  let text = '';
  return { write: (chunk: string) => void (text += chunk), text: () => text };
}

describe('reading the token for login', () => {
  it('on a terminal: in raw mode, so nothing typed is echoed; backspace takes back a character, Enter ends it, and the mode is restored', async () => {
    const input = terminal();
    const stderr = capture();
    const token = readToken(input, stderr);
    // Typed after the prompt shows, in pieces, as a person (or a paste) would.
    expect(input.modes).toEqual([true]);
    input.write('eyJ.abc');
    input.write('x\u007f.def\r');
    expect(await token).toBe('eyJ.abc.def');
    expect(input.modes).toEqual([true, false]);
    expect(stderr.text()).toBe('Access token (input hidden): \n');
  });

  it('on a terminal: Ctrl-C cancels, with the mode restored', async () => {
    const input = terminal();
    const token = readToken(input, capture());
    input.write('eyJ\u0003');
    await expect(token).rejects.toThrow('cancelled; nothing was saved.');
    expect(input.modes).toEqual([true, false]);
  });

  it('from a pipe: everything stdin holds, trimmed; more than a token could be is refused', async () => {
    const piped = new PassThrough();
    const token = readToken(piped, capture());
    piped.end('  eyJ.abc.def\n');
    expect(await token).toBe('eyJ.abc.def');

    const flood = new PassThrough();
    const refused = readToken(flood, capture());
    flood.end('x'.repeat(MAX_TOKEN_CHARS + 1));
    await expect(refused).rejects.toThrow('that is not an access token');
  });
});
