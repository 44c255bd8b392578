// `npm run build` (and `npm pack`, through prepack): the agent as one file, dist/tunnel.mjs,
// with commander, the generated API client and everything else it imports inside, so the
// package installs with no dependencies. Needs only node: esbuild strips the types.
import { chmodSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const outfile = join(root, 'dist', 'tunnel.mjs');

const result = await build({
  entryPoints: [join(root, 'src', 'main.ts')],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  // package.json's engines.
  target: 'node20.19',
  // commander is CommonJS: its require() of node's own modules needs a real require in an ES module.
  banner: { js: "#!/usr/bin/env node\nimport { createRequire as __createRequire } from 'node:module';\nconst require = __createRequire(import.meta.url);" },
  // Not minified: a stack trace from a user should name real lines.
  metafile: true,
  // Inputs in the metafile are relative to this.
  absWorkingDir: root,
  logLevel: 'warning',
});
chmodSync(outfile, 0o755);

// The bundled packages' licenses (MIT ask for their notices to travel with copies), beside the bundle.
const packages = new Set();
for (const input of Object.keys(Object.values(result.metafile.outputs)[0].inputs)) {
  const match = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
  if (match) packages.add(join(root, match[1]));
}
const notices = [...packages].sort().map((dir) => {
  const { name, version, license } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  const file = readdirSync(dir).find((f) => /^licen[cs]e/i.test(f));
  if (!file) throw new Error(`${name} ships no license file to include`);
  return `${name}@${version} (${license})\n\n${readFileSync(join(dir, file), 'utf8').trim()}\n`;
});
writeFileSync(join(dirname(outfile), 'THIRD-PARTY-LICENSES.txt'), `The agent's bundle (tunnel.mjs) includes:\n\n${notices.join('\n---\n\n')}`);

const bytes = Object.values(result.metafile.outputs)[0].bytes;
process.stdout.write(`dist/tunnel.mjs: ${bytes} bytes, bundling ${packages.size} packages\n`);
