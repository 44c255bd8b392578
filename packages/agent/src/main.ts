import { Command, CommanderError } from 'commander';
import { registerAgentCommands } from './commands.js';

/**
 * `npm run agent -- <command>`: the agent's commands on their own, without loading any of the
 * server. The installed `tunnel-broker` bin (src/cli/main.ts) registers the same commands.
 */
const program = new Command('tunnel-broker')
  .description('Expose local ports through a tunnel broker')
  .showHelpAfterError()
  .enablePositionalOptions()
  // Before the commands are added, so they inherit it: usage errors exit 2, as in the bin.
  .exitOverride();
registerAgentCommands(program);
try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (!(error instanceof CommanderError)) throw error;
  process.exitCode = error.exitCode === 0 ? 0 : 2;
}
