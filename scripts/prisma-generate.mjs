// Runs `prisma generate` without letting the CLI download its schema engine.
// Generate never executes that engine, but the CLI insists that one exists unless
// PRISMA_SCHEMA_ENGINE_BINARY names a file, so point it at this script when unset.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
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
if (result.status !== 0) process.exit(result.status ?? 1);
readWasmAsFile(fileURLToPath(new URL('../src/generated/prisma/internal/class.ts', import.meta.url)));

/**
 * The generated client loads Prisma's query compiler by importing a module that holds the
 * WebAssembly as one 4.5 MB base64 string. A module is never unloaded, so that string stays
 * in the heap for the life of the process, twice (the module's source and the string
 * constant): ~9 MB of the idle broker's RSS (issue 14). Reading the same file as text and
 * decoding it leaves nothing behind. If a Prisma update changes the generated code this
 * leaves it as it is and says so; test/server-footprint.test.ts then fails.
 */
function readWasmAsFile(classFile) {
  const source = readFileSync(classFile, 'utf8');
  const imported = /const \{ wasm \} = await import\("(@prisma\/client\/runtime\/query_compiler_\w+_bg\.\w+\.wasm-base64\.mjs)"\)\n(\s*)return await decodeBase64AsWasm\(wasm\)/;
  const match = imported.exec(source);
  if (!match) {
    console.warn(`prisma-generate: ${classFile} does not import the query compiler's wasm as expected; left unchanged`);
    return;
  }
  const [whole, specifier, indent] = match;
  const replacement = [
    `// Read as text, not imported (scripts/prisma-generate.mjs): an imported module's base64 stays in the heap.`,
    `const { readFile } = await import('node:fs/promises')`,
    `const { createRequire } = await import('node:module')`,
    `const text = await readFile(createRequire(import.meta.url).resolve(${JSON.stringify(specifier)}), 'utf8')`,
    `const base64 = /const wasm = "([^"]*)"/.exec(text)?.[1]`,
    `if (base64 === undefined) throw new Error('no wasm in ${specifier}')`,
    `return await decodeBase64AsWasm(base64)`,
  ].join(`\n${indent}`);
  writeFileSync(classFile, source.replace(whole, replacement));
}
