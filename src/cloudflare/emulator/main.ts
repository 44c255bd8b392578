/**
 * Standalone Cloudflare API emulator: `npm run emulator -- [--port 8787] [--host 127.0.0.1]
 * [--account-id ...] [--zone-id ...] [--zone-name ...] [--api-token ...] [--seed N]
 * [--max-tunnels N] [--verbose]`. A bare number is taken as the port.
 *
 * The first stdout line is the base URL and nothing else, so a parent process can
 * read it (start with --port 0 for an ephemeral port). Everything else goes to stderr.
 */
import { parseArgs } from 'node:util';
import pino from 'pino';
import { startCloudflareEmulator } from './emulator.js';

function intArg(raw: string | undefined, name: string, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    process.stderr.write(`cloudflare-emulator: --${name} must be a non-negative integer, got '${raw}'\n`);
    process.exit(2);
  }
  return n;
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      'account-id': { type: 'string' },
      'zone-id': { type: 'string' },
      'zone-name': { type: 'string' },
      'api-token': { type: 'string' },
      seed: { type: 'string' },
      'max-tunnels': { type: 'string' },
      verbose: { type: 'boolean', default: false },
    },
  });

  const port = intArg(values.port ?? positionals[0], 'port', 8787);
  const logger = pino({ level: values.verbose ? 'debug' : 'info', name: 'cloudflare-emulator' }, pino.destination(2));
  const emulator = await startCloudflareEmulator({
    host: values.host ?? '127.0.0.1',
    port,
    accountId: values['account-id'],
    zoneId: values['zone-id'],
    zoneName: values['zone-name'],
    apiToken: values['api-token'],
    seed: values.seed === undefined ? undefined : intArg(values.seed, 'seed', 1),
    maxTunnels: values['max-tunnels'] === undefined ? undefined : intArg(values['max-tunnels'], 'max-tunnels', 1000),
    logger,
  });

  process.stdout.write(`${emulator.url}\n`);
  process.stderr.write(
    [
      `cloudflare-emulator listening; control API at ${emulator.controlUrl}`,
      'point the broker at it with:',
      `  CLOUDFLARE_BASE_URL=${emulator.url}`,
      `  CLOUDFLARE_API_TOKEN=${emulator.apiToken}`,
      `  CLOUDFLARE_ACCOUNT_ID=${emulator.accountId}`,
      `  CLOUDFLARE_ZONE_ID=${emulator.zoneId}`,
      `  TUNNEL_DOMAIN=${emulator.zoneName}`,
      '',
    ].join('\n'),
  );

  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'cloudflare-emulator stopping');
    emulator.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'cloudflare-emulator close failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`cloudflare-emulator failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
