import type { Command } from 'commander';
import { CliError, type CliContext, ExitCode } from '../context.js';

/**
 * `connect`, `list`, `stop` and `login` were the agent's commands on this bin; the agent is its
 * own package now (`tunnel`, packages/agent). Hidden commands that say where each went, so an
 * old habit gets directions rather than "unknown command".
 */
export function registerAgentMovedCommands(program: Command, _context: CliContext): void {
  const operator: Record<string, string> = { list: 'tunnel-broker tunnels list', stop: 'tunnel-broker tunnels end <id>' };
  for (const name of ['connect', 'list', 'stop', 'login']) {
    program
      .command(name, { hidden: true })
      .allowUnknownOption()
      .allowExcessArguments()
      .action(() => {
        const forOperators = operator[name] ? ` (an operator's view of every user's tunnels: \`${operator[name]}\`)` : '';
        throw new CliError(
          `\`${name}\` is the agent's command now: \`tunnel ${name}\`, from the @tunnel-broker/agent package ` +
            `(in a checkout: \`npm run agent -- ${name}\`)${forOperators}.`,
          ExitCode.usage,
        );
      });
  }
}
