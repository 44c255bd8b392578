import { parseArgs } from 'node:util';
import { parseDuration, signAccessToken } from '../auth/access-token.js';
import { ConfigError, loadConfig } from '../config/env.js';

/** `npm run token -- <user-id> [--ttl 30d]`: prints an access token the running broker accepts. */
function main(argv: string[]): number {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { ttl: { type: 'string', default: '30d' } } });
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\nusage: npm run token -- <user-id> [--ttl 30d]\n`);
    return 2;
  }
  const userId = parsed.positionals[0];
  if (!userId) {
    process.stderr.write('usage: npm run token -- <user-id> [--ttl 30d]\n');
    return 2;
  }
  try {
    const config = loadConfig(process.env);
    if (config.jwt.isDevelopmentSecret) process.stderr.write('warning: signing with the development JWT secret (JWT_SECRET is not set)\n');
    process.stdout.write(`${signAccessToken(config.jwt.secret, userId, parseDuration(parsed.values.ttl))}\n`);
    return 0;
  } catch (error) {
    process.stderr.write(`${error instanceof ConfigError ? error.message : `error: ${(error as Error).message}`}\n`);
    return 1;
  }
}

process.exitCode = main(process.argv.slice(2));
