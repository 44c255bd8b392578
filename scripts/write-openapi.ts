// `npm run openapi`: writes the broker's OpenAPI document (what GET /docs/json serves) to
// packages/agent/openapi.json, the file the agent's HTTP types are generated from. Builds the
// app in-process and never listens. The app connects to PostgreSQL (`SELECT 1`, no tables
// needed) and Redis (`PING`, nothing written) while it registers; DATABASE_URL and REDIS_URL
// say where, or, as for `npm start`, the embedded PostgreSQL and private Redis in DEV_DATA_DIR.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../src/app.js';
import { loadBootConfig } from '../src/config/env.js';
import { ensureDatabase } from '../src/db/migrate.js';
import { startServices } from '../src/dev-services/dev-services.js';

const OUT = fileURLToPath(new URL('../packages/agent/openapi.json', import.meta.url));

// Everything but where PostgreSQL and Redis are is fixed here, so the document never depends on
// who ran the script (the route schemas do not read the config, and the check keeps it so).
const services = await startServices(loadBootConfig({
  NODE_ENV: 'test',
  DATABASE_URL: process.env.DATABASE_URL,
  REDIS_URL: process.env.REDIS_URL,
  DEV_DATA_DIR: process.env.DEV_DATA_DIR,
  REDIS_KEY_PREFIX: 'openapi-document:',
  JWT_SECRET: 'openapi-document-only-secret-never-used-to-sign',
  LOG_LEVEL: 'warn',
}));
try {
  // On a fresh embedded server the broker's database does not exist yet (npm start creates it too).
  await ensureDatabase(services.config.databaseUrl);
  const app = await buildApp(services.config, { startReaper: false, startReconciler: false, restoreHeartbeats: false });
  try {
    await app.ready();
    writeFileSync(OUT, `${JSON.stringify(app.swagger(), null, 2)}\n`);
    process.stdout.write(`wrote ${OUT}\n`);
  } finally {
    await app.close();
  }
} finally {
  await services.stop();
}
