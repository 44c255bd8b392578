import { registerHooks } from 'node:module';
import { readFileSync } from 'node:fs';
const SPEC = 'tunnel-broker:cloudflare-base';
let clientUrl;
registerHooks({
  resolve(specifier, context, next) {
    if (specifier !== SPEC) return next(specifier, context);
    clientUrl ??= next('cloudflare/client', context).url;
    return { url: `${clientUrl}?base`, format: 'module', shortCircuit: true };
  },
  load(url, context, next) {
    if (!url.endsWith('/client.mjs?base')) return next(url, context);
    let src = readFileSync(new URL(url.slice(0, -5)), 'utf8');
    src = src.replace(/^import [^;]*? from "\.\/resources\/[^"]+";\n/gm, '');
    const at = src.indexOf('\nexport var Cloudflare = ');
    src = src.slice(0, at) + '\n';
    return { format: 'module', source: src, shortCircuit: true };
  },
});
const { BaseCloudflare } = await import(SPEC);
const { Cloudflared } = await import('cloudflare/resources/zero-trust/tunnels/cloudflared/cloudflared');
console.log(typeof BaseCloudflare, typeof Cloudflared, (process.memoryUsage().rss/1048576).toFixed(1), (process.memoryUsage().heapUsed/1048576).toFixed(1));
