#!/usr/bin/env node
// The `tunnel-broker` command. Runs the compiled CLI when the package is built (dist/, as in
// the container image), else the TypeScript source through tsx (a production dependency),
// so a checkout works without a build step.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const compiled = new URL('../dist/cli/main.js', import.meta.url);
let cli;
if (existsSync(fileURLToPath(compiled))) {
  cli = await import(compiled.href);
} else {
  const { tsImport } = await import('tsx/esm/api');
  cli = await tsImport('../src/cli/main.ts', import.meta.url);
}
await cli.main(process.argv.slice(2));
