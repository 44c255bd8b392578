import { type Command, InvalidArgumentError } from 'commander';
import { parseDuration, signAccessToken } from '../../auth/access-token.js';
import { CliError, type CliContext, ExitCode, loadCliConfig } from '../context.js';
import { json } from '../output.js';

/** `token create --user <id> [--ttl 30d]`: an access token the API accepts, signed with JWT_SECRET. */
export function registerTokenCommands(program: Command, context: CliContext): void {
  const token = program.command('token').description('mint access tokens');
  token
    .command('create')
    .description('print an access token (HS256 over JWT_SECRET, sub = the user id) that the API accepts')
    .requiredOption('--user <id>', 'the user id the token stands for (its `sub`)')
    .option('--ttl <duration>', 'lifetime: 30d, 12h, 15m, 45s or seconds', parseTtl, parseTtl('30d'))
    .option('--json', 'print {token, userId, expiresAt}')
    .action((options: { user: string; ttl: number; json?: boolean }) => {
      const config = loadCliConfig(context);
      if (config.jwt.isDevelopmentSecret) context.stderr('warning: signing with the development JWT secret (JWT_SECRET is not set)\n');
      let signed: string;
      try {
        signed = signAccessToken(config.jwt.secret, options.user, options.ttl);
      } catch (error) {
        throw new CliError((error as Error).message, ExitCode.usage);
      }
      const expiresAt = new Date(Date.now() + options.ttl * 1000).toISOString();
      context.stdout(options.json ? json({ token: signed, userId: options.user, expiresAt }) : `${signed}\n`);
    });
}

function parseTtl(text: string): number {
  try {
    return parseDuration(text);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}
