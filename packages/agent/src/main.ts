import { Command, CommanderError } from 'commander';
import packageJson from '../package.json' with { type: 'json' };
import { registerAgentCommands } from './commands.js';
import { limitYoungGeneration } from './heap.js';

limitYoungGeneration();

/**
 * The `tunnel` bin: the bundle built from this file (dist/tunnel.mjs) when installed from the
 * package, and `npm run agent -- <command>` in a checkout. Loads nothing of the server.
 */
const program = new Command('tunnel')
  .description('Expose local ports through a tunnel broker')
  .version(packageJson.version, '-V, --version')
  .showHelpAfterError()
  .enablePositionalOptions()
  // Before the commands are added, so they inherit it: usage errors exit 2.
  .exitOverride();
registerAgentCommands(program);
try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (!(error instanceof CommanderError)) throw error;
  process.exitCode = error.exitCode === 0 ? 0 : 2;
}
