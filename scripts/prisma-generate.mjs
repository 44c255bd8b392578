// Runs `prisma generate` without letting the CLI download its schema engine.
// Generate never executes that engine, but the CLI insists that one exists unless
// PRISMA_SCHEMA_ENGINE_BINARY names a file, so point it at this script when unset.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const env = { ...process.env };
env.PRISMA_SCHEMA_ENGINE_BINARY ??= fileURLToPath(import.meta.url);
env.PRISMA_HIDE_UPDATE_MESSAGE = '1';
let cli;
try {
  cli = require.resolve('prisma/build/index.js');
} catch {
  // A production install (--omit=dev) has no Prisma CLI; its image copies the client
  // generated at build time instead.
  console.log('prisma CLI not installed; skipping prisma generate');
  process.exit(0);
}
const result = spawnSync(process.execPath, [cli, 'generate'], { stdio: 'inherit', env });
process.exit(result.status ?? 1);
