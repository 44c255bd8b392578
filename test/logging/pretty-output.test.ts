import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/process.js';

const run = promisify(execFile);
const FIXTURE = 'test/fixtures/log-line.ts';
const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' };
// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;]*m/g;

/** stdout a pipe, as under systemd, Docker or a log shipper. */
async function piped(pretty: string): Promise<string> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', FIXTURE, pretty], { cwd: REPO_ROOT, env, timeout: 60_000 });
  return stdout;
}

/** stdout a terminal: util-linux `script` gives the child a pseudo-terminal. */
async function onTerminal(pretty: string): Promise<string> {
  const command = `${process.execPath} --import tsx ${FIXTURE} ${pretty}`;
  const { stdout } = await run('script', ['-qec', command, '/dev/null'], { cwd: REPO_ROOT, env, timeout: 60_000 });
  return stdout.replace(ANSI, '').replace(/\r/g, '');
}

function expectJson(output: string) {
  const line = JSON.parse(output.trim()) as Record<string, unknown>;
  expect(line).toMatchObject({ level: 30, msg: 'hello from the fixture', event: 'fixture.line', token: '[redacted]' });
}

function expectPretty(output: string) {
  expect(output).toMatch(/^\[\d{2}:\d{2}:\d{2}\.\d{3}\] INFO.*: hello from the fixture$/m);
  expect(output).toMatch(/^\s+event: "fixture.line"$/m);
  expect(output.trim().startsWith('{')).toBe(false);
  expect(output).toContain('[redacted]');
  expect(output).not.toContain('fixture-secret-token');
}

describe('log output', () => {
  it('is JSON when stdout is not a terminal and LOG_PRETTY is unset', async () => {
    expectJson(await piped('unset'));
  });

  it('is pino-pretty when LOG_PRETTY is set, even into a pipe, and still redacted', async () => {
    expectPretty(await piped('true'));
  });

  it('is pino-pretty when stdout is a terminal', async () => {
    expectPretty(await onTerminal('unset'));
  });

  it('stays JSON on a terminal when LOG_PRETTY=false', async () => {
    expectJson(await onTerminal('false'));
  });
});
