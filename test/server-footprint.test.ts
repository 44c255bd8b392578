import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../src/auth/access-token.js';
import { type CloudflareEmulator, startCloudflareEmulator } from '../src/cloudflare/emulator/emulator.js';
import { TEST_JWT_SECRET } from './helpers/broker.js';
import { createTestDatabase, type TestDatabase } from './helpers/database.js';
import { freePort, runCommand } from './helpers/process.js';
import { REDIS_URL, testKeyPrefix } from './helpers/redis-keys.js';
import { tempDir } from './helpers/temp-dir.js';

// Issue 14: the idle RSS of a production broker. What it loads and never uses costs memory
// for the life of the process; this checks, in a real broker process (NODE_ENV=production,
// every store and Cloudflare given), what is loaded after start-up and one create.

describe('a configured production broker', () => {
  let db: TestDatabase;
  let emulator: CloudflareEmulator;

  beforeAll(async () => {
    db = await createTestDatabase();
    emulator = await startCloudflareEmulator({ zoneName: 'tunnels.test' });
  });
  afterAll(async () => {
    await emulator?.close();
    await db?.drop();
  });

  it('loads neither the whole Cloudflare SDK, nor the base64 module of the query compiler, nor the emulator, the dev stores or Swagger UI', async () => {
    const port = await freePort();
    const modulesFile = path.join(tempDir('footprint'), 'modules.json');
    const env = {
      NODE_ENV: 'production',
      PORT: String(port),
      HOST: '127.0.0.1',
      DATABASE_URL: db.url,
      REDIS_URL,
      REDIS_KEY_PREFIX: testKeyPrefix('footprint'),
      JWT_SECRET: TEST_JWT_SECRET,
      CLOUDFLARE_API_TOKEN: emulator.apiToken,
      CLOUDFLARE_ACCOUNT_ID: emulator.accountId,
      CLOUDFLARE_ZONE_ID: emulator.zoneId,
      CLOUDFLARE_BASE_URL: emulator.url,
      TUNNEL_DOMAIN: 'tunnels.test',
      LOG_LEVEL: 'info',
      LOG_PRETTY: 'false',
      RECORD_MODULES_FILE: modulesFile,
    };
    const server = runCommand(process.execPath, ['--import', 'tsx', '--import', './test/fixtures/record-modules.mjs', 'src/server.ts'], env);
    let modules: string[];
    try {
      await server.waitFor(/tunnel broker ready/, 60_000);
      // One create: the SDK's requests, Prisma's query compiler and the heartbeat store all run.
      const created = await fetch(`http://127.0.0.1:${port}/v1/tunnels`, {
        method: 'POST',
        headers: { authorization: `Bearer ${signAccessToken(TEST_JWT_SECRET, 'footprint', 60)}`, 'content-type': 'application/json' },
        body: JSON.stringify({ port: 3000 }),
      });
      expect(created.status).toBe(201);
      server.child.kill('SIGUSR2');
      await server.waitFor(/modules recorded/, 10_000);
      modules = JSON.parse(readFileSync(modulesFile, 'utf8')) as string[];
    } finally {
      await server.stop('SIGTERM');
    }

    const sdk = modules.filter((url) => url.includes('/node_modules/cloudflare/'));
    // The SDK's client module imports all ~1,150 resource modules; the broker needs a few dozen.
    expect(sdk.some((url) => url.endsWith('/node_modules/cloudflare/index.mjs') || url.endsWith('/node_modules/cloudflare/client.mjs') || url.endsWith('/resources/index.mjs'))).toBe(false);
    expect(sdk.length).toBeGreaterThan(0);
    expect(sdk.length).toBeLessThan(100);
    // The wasm is read as a file (scripts/prisma-generate.mjs), not imported as a module.
    expect(modules.filter((url) => /query_compiler_\w+_bg\.\w+\.wasm-base64/.test(url))).toEqual([]);
    expect(modules.filter((url) => /\/src\/(cloudflare\/emulator|dev-services\/(embedded-postgres|private-redis))/.test(url))).toEqual([]);
    // Swagger UI and its static-file server load on the first request for /docs (src/plugins/docs-ui.ts).
    expect(modules.filter((url) => /\/node_modules\/@fastify\/(swagger-ui|static)\//.test(url))).toEqual([]);
    // The environment is validated with Ajv (src/config/schema-validator.ts), not TypeBox's Value module.
    expect(modules.filter((url) => /\/node_modules\/typebox\/build\/value\//.test(url))).toEqual([]);
  });
});
