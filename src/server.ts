// First: V8's heap settings, before the other modules' loading grows the heap (see there).
import { optimizeForSpeed } from './lifecycle/small-heap.js';
import closeWithGrace from 'close-with-grace';
import type { FastifyInstance } from 'fastify';
import { buildApp } from './app.js';
import type { CloudflareEmulator } from './cloudflare/emulator/emulator.js';
import { type BootConfig, type Config, ConfigError, loadBootConfig, migrationDatabaseUrl } from './config/env.js';
import { runMigrations } from './db/migrate.js';
import { logServices, startServices, type StartedServices } from './dev-services/dev-services.js';
import { RedisServerMissingError } from './dev-services/redis-server-missing.js';
import { createLogger } from './logging/logger.js';

/** How long in-flight requests and the running sweep get to finish after SIGTERM. */
export const SHUTDOWN_GRACE_MS = 15_000;

/**
 * `npm start`: migrate, then run the API and/or the reaper (BROKER_ROLE), until a signal.
 * Outside production, what is not configured is started here: an embedded PostgreSQL without
 * DATABASE_URL, a private redis-server without REDIS_URL, a Cloudflare emulator without
 * Cloudflare settings.
 */
async function main(): Promise<void> {
  let boot: BootConfig;
  try {
    boot = loadBootConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\nSee docs/configuration.md for every variable.\n`);
      process.exit(1);
    }
    throw error;
  }
  const logger = createLogger(boot);

  let services: StartedServices;
  try {
    services = await startServices(boot);
  } catch (error) {
    if (error instanceof RedisServerMissingError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(1);
    }
    logger.fatal({ err: error }, 'cannot start PostgreSQL or Redis');
    process.exit(1);
  }
  logServices(logger, services.description);
  let config: Config = services.config;

  // Several instances may start together: the runner serialises them with an advisory lock.
  try {
    const migrated = await runMigrations({ databaseUrl: migrationDatabaseUrl(config), logger });
    if (migrated.applied.length > 0) logger.info({ applied: migrated.applied }, 'database migrated');
  } catch (error) {
    logger.fatal({ err: error }, 'cannot migrate the database');
    await services.stop();
    process.exit(1);
  }

  let emulator: CloudflareEmulator | undefined;
  if (config.cloudflare.mode === 'emulator') {
    // Loaded only in development: a configured broker never runs the emulator.
    const { startCloudflareEmulator } = await import('./cloudflare/emulator/emulator.js');
    emulator = await startCloudflareEmulator({
      accountId: config.cloudflare.accountId,
      zoneId: config.cloudflare.zoneId,
      zoneName: config.tunnels.domain,
      apiToken: config.cloudflare.apiToken,
    });
    // The one account is the emulator's: the SDK client of each account is built from its entry.
    const accounts = config.cloudflare.accounts.map((account) => ({ ...account, baseUrl: emulator!.url }));
    config = { ...config, cloudflare: { ...config.cloudflare, baseUrl: emulator.url, accounts } };
    logger.warn(
      { emulatorUrl: emulator.url },
      `DEVELOPMENT MODE: no Cloudflare settings, so tunnels are created in a built-in emulator at ${emulator.url}. ` +
        `Hostnames under ${config.tunnels.domain} route nothing. Set CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID, ` +
        'CLOUDFLARE_ZONE_ID and TUNNEL_DOMAIN to use Cloudflare.',
    );
  }
  if (config.jwt.isDevelopmentSecret) {
    logger.warn('DEVELOPMENT MODE: JWT_SECRET is not set; using a well-known development secret. Anyone can mint tokens. Never expose this instance.');
  }

  let app: FastifyInstance;
  try {
    app = await buildApp(config, { logger });
    await app.ready();
  } catch (error) {
    logger.fatal({ err: error }, 'startup failed');
    await emulator?.close();
    await services.stop();
    process.exit(1);
  }

  closeWithGrace({ delay: SHUTDOWN_GRACE_MS, logger }, async ({ signal, err }) => {
    if (err) logger.error({ err }, 'shutting down after an unexpected error');
    else logger.info({ signal }, 'shutting down');
    // Stops accepting connections, lets in-flight requests and the reaper's sweep finish,
    // then closes PostgreSQL and Redis (see the plugins' onClose hooks).
    await app.close();
    await emulator?.close();
    // Last: the requests and the sweep that were draining still needed them.
    await services.stop();
  });

  try {
    await app.listen({ host: config.http.host, port: config.http.port });
  } catch (error) {
    const inUse = (error as NodeJS.ErrnoException).code === 'EADDRINUSE';
    logger.fatal({ err: error }, inUse ? `port ${config.http.port} is in use: set PORT to a free one` : 'cannot listen');
    await app.close();
    await emulator?.close();
    await services.stop();
    process.exit(1);
  }
  optimizeForSpeed();
  logger.info({ role: config.role, reaper: app.reaper !== null }, `tunnel broker ready on http://${config.http.host}:${config.http.port}`);
}

main().catch((error: unknown) => {
  process.stderr.write(`fatal: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`);
  process.exit(1);
});
