// `npm run cli -- <command>` in a checkout, `tunnel-broker <command>` when installed
// (bin/tunnel-broker.mjs). One commander program; command groups register themselves on it.
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { isAppError } from '../errors/catalogue.js';
import { registerAgentMovedCommands } from './commands/agent-moved.js';
import { registerDbCommands } from './commands/db.js';
import { registerDoctorCommand } from './commands/doctor.js';
import { registerReconcileCommand } from './commands/reconcile.js';
import { registerTokenCommands } from './commands/token.js';
import { registerTunnelCommands } from './commands/tunnels.js';
import { CliError, type CliContext, describeError, ExitCode, LOG_LEVELS } from './context.js';

export { CliError, type CliContext, ExitCode, type GlobalOptions } from './context.js';

/**
 * Adds a group of commands to the program. Use `program.command(...)` (not `addCommand`),
 * throw CliError for failures the user should read, and write results through `context`.
 */
export type CommandRegistrar = (program: Command, context: CliContext) => void;

/** Every command group of the `tunnel-broker` bin, in the order `--help` lists them. */
export const COMMANDS: readonly CommandRegistrar[] = [
  registerTokenCommands,
  registerTunnelCommands,
  registerReconcileCommand,
  registerDoctorCommand,
  registerDbCommands,
  // The developer's side is the agent's own bin now (`tunnel`, packages/agent): directions only.
  registerAgentMovedCommands,
];

export function buildProgram(context: CliContext, registrars: readonly CommandRegistrar[] = COMMANDS): Command {
  const program = new Command('tunnel-broker')
    .description('Operate a tunnel broker: mint tokens, list and end tunnels, reconcile Cloudflare, check the setup, migrate the database.')
    .version(packageVersion(), '-V, --version')
    .option('--log-level <level>', `the broker's own log lines, on stderr (${LOG_LEVELS.join(', ')})`, 'error')
    .showHelpAfterError('(add --help for usage)');
  for (const register of registrars) register(program, context);
  // Every command, whoever registered it: errors and help go through `context`, never process.exit.
  const configure = (command: Command) => {
    command.exitOverride().configureOutput({ writeOut: (text) => context.stdout(text), writeErr: (text) => context.stderr(text) });
    for (const sub of command.commands) configure(sub);
  };
  configure(program);
  program.hook('preAction', (_program, action) => {
    const level = action.optsWithGlobals<{ logLevel: string }>().logLevel;
    if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new CliError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`, ExitCode.usage);
  });
  return program;
}

/** Parses and runs one command line; resolves to the exit code. Never exits the process itself. */
export async function runCli(argv: string[], context: CliContext, registrars: readonly CommandRegistrar[] = COMMANDS): Promise<number> {
  const program = buildProgram(context, registrars);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return ExitCode.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and --version exit 0; a usage error has already been printed by commander.
      if (error.exitCode === 0 || error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return ExitCode.ok;
      return ExitCode.usage;
    }
    if (error instanceof CliError) {
      if (error.message !== '') context.stderr(`error: ${error.message}\n`);
      return error.exitCode;
    }
    if (isAppError(error) && error.code === 'SERVICE_UNAVAILABLE') {
      context.stderr(`error: PostgreSQL or Redis is unavailable (${describeError(error.cause ?? error)}); run \`tunnel-broker doctor\`\n`);
      return ExitCode.failure;
    }
    context.stderr(`error: ${describeError(error)}\n`);
    return ExitCode.failure;
  }
}

export function processContext(): CliContext {
  return {
    env: process.env,
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
    stderrIsTTY: process.stderr.isTTY === true,
  };
}

/**
 * The bin's whole job: run, let stdout and stderr drain (they are asynchronous pipes), then
 * exit with the code, whatever timers or sockets a library left behind.
 */
export async function main(argv: string[] = process.argv.slice(2)): Promise<never> {
  const code = await runCli(argv, processContext());
  await Promise.all([drain(process.stdout), drain(process.stderr)]);
  process.exit(code);
}

function drain(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    stream.write('', () => resolve());
  });
}

function packageVersion(): string {
  // src/cli/ and dist/cli/ both sit two levels below package.json.
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) await main();
