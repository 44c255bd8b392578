import { AgentUsageError } from './config.js';
import type { OutputStream } from './status-line.js';

/**
 * Where `login` reads a token that is not on its command line (where `ps` and shell history
 * would show it): a pipe or file on stdin (`--token -`), or the terminal, asked for without
 * echoing it.
 */
export interface TokenInput extends AsyncIterable<Buffer | string> {
  isTTY?: boolean;
  setRawMode?(mode: boolean): unknown;
  on(event: 'data', listener: (chunk: Buffer | string) => void): unknown;
  off(event: 'data', listener: (chunk: Buffer | string) => void): unknown;
  resume(): unknown;
  pause(): unknown;
}

/** Far above any JWT; more is not a token, and reading stops there. */
export const MAX_TOKEN_CHARS = 16 * 1024;

const CTRL_C = '\u0003';
const CTRL_D = '\u0004';
const BACKSPACE = ['\u007f', '\b'];

/** The token, trimmed: typed at a prompt on `stderr` when stdin is a terminal, else everything stdin holds. */
export async function readToken(input: TokenInput, stderr: OutputStream, prompt = 'Access token (input hidden): '): Promise<string> {
  const token = input.isTTY && input.setRawMode ? await askHidden(input, stderr, prompt) : await readAll(input);
  return token.trim();
}

async function readAll(input: TokenInput): Promise<string> {
  let text = '';
  for await (const chunk of input) {
    text += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
    if (text.length > MAX_TOKEN_CHARS) throw new AgentUsageError(`stdin holds more than ${MAX_TOKEN_CHARS} characters: that is not an access token.`);
  }
  return text;
}

/**
 * Raw mode, so nothing typed or pasted is echoed, and Ctrl-C arrives as a character rather than
 * a signal: it cancels. Enter (or Ctrl-D) ends the token; backspace takes back a character.
 */
function askHidden(input: TokenInput, stderr: OutputStream, prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let value = '';
    const finish = (outcome: () => void) => {
      input.off('data', onData);
      input.setRawMode?.(false);
      input.pause();
      stderr.write('\n');
      outcome();
    };
    const onData = (chunk: Buffer | string) => {
      for (const ch of typeof chunk === 'string' ? chunk : chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n' || ch === CTRL_D) return finish(() => resolve(value));
        if (ch === CTRL_C) return finish(() => reject(new AgentUsageError('cancelled; nothing was saved.')));
        if (BACKSPACE.includes(ch)) value = value.slice(0, -1);
        else if (ch >= ' ') value += ch;
        if (value.length > MAX_TOKEN_CHARS) return finish(() => reject(new AgentUsageError(`more than ${MAX_TOKEN_CHARS} characters: that is not an access token.`)));
      }
    };
    // Raw before the prompt shows: whatever is typed once it is visible is not echoed.
    input.setRawMode?.(true);
    input.on('data', onData);
    input.resume();
    stderr.write(prompt);
  });
}
