// `npm run openapi`: writes the broker's OpenAPI document (what GET /docs/json serves) to
// packages/agent/openapi.json, the file the agent's HTTP types are generated from. Builds the
// app in-process and never listens. The app connects to PostgreSQL (`SELECT 1`, no tables
// needed) and Redis (`PING`, nothing written) while it registers; DATABASE_URL and REDIS_URL
// say where, defaulting to the local ones.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config/env.js';

const OUT = fileURLToPath(new URL('../packages/agent/openapi.json', import.meta.url));

// Everything but where PostgreSQL and Redis are is fixed here, so the document never depends on
// who ran the script (the route schemas do not read the config, and the check keeps it so).
const config = loadConfig({
  NODE_ENV: 'test',
  DATABASE_URL: process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres',
  REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  REDIS_KEY_PREFIX: 'openapi-document:',
  JWT_SECRET: 'openapi-document-only-secret-never-used-to-sign',
  LOG_LEVEL: 'warn',
});
const app = await buildApp(config, { startReaper: false, startReconciler: false, restoreHeartbeats: false });
try {
  await app.ready();
  writeFileSync(OUT, `${JSON.stringify(app.swagger(), null, 2)}\n`);
  process.stdout.write(`wrote ${OUT}\n`);
} finally {
  await app.close();
}
