import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import type { BaseCloudflare as BaseCloudflareClass, ClientOptions } from 'cloudflare/client';
import { BaseRecords } from 'cloudflare/resources/dns/records';
import { BaseTokens } from 'cloudflare/resources/accounts/tokens/tokens';
import { BaseTokens as BaseUserTokens } from 'cloudflare/resources/user/tokens/tokens';
import { BaseZones } from 'cloudflare/resources/zones/zones';
import { BaseApplications } from 'cloudflare/resources/zero-trust/access/applications/applications';
import { BasePolicies } from 'cloudflare/resources/zero-trust/access/policies';
import { BaseIdentityProviders } from 'cloudflare/resources/zero-trust/identity-providers/identity-providers';
import { Cloudflared } from 'cloudflare/resources/zero-trust/tunnels/cloudflared/cloudflared';

/**
 * The part of the Cloudflare API the broker calls, on the SDK's own client (requests, retries,
 * timeouts, pagination and error classes are the SDK's, unchanged).
 *
 * Why not `new Cloudflare()`: the SDK's client module imports every resource of the whole API
 * (~1,150 modules, ~16 MB of heap and ~35 MB of RSS that stay for the life of the process),
 * and the SDK's own "tree-shakable" entry imports that same module. The broker uses eight
 * resources (doctor's checks included). So the client module is loaded once without its resource imports: its source
 * up to the full client class, which is all `BaseCloudflare` is, with every relative import
 * made absolute, so it shares its core modules (errors, pagination, APIPromise) with the
 * resource modules imported above. If an SDK update moves things, loading fails at start-up
 * (test/cloudflare/cloudflare-sdk.test.ts, test/server-footprint.test.ts), never half-way through a request.
 */
export interface CloudflareSdk {
  zeroTrust: {
    tunnels: { cloudflared: Cloudflared };
    access: { applications: BaseApplications; policies: BasePolicies };
    identityProviders: BaseIdentityProviders;
  };
  dns: { records: BaseRecords };
  zones: BaseZones;
  accounts: { tokens: BaseTokens };
  user: { tokens: BaseUserTokens };
}

type BaseCloudflareConstructor = typeof BaseCloudflareClass;

/** client.mjs of the installed SDK, less its resource imports and everything after BaseCloudflare. */
export function baseClientSource(): string {
  const clientJs = createRequire(import.meta.url).resolve('cloudflare/client');
  const clientUrl = pathToFileURL(clientJs.replace(/\.js$/, '.mjs'));
  const source = readFileSync(clientUrl, 'utf8');
  const end = source.indexOf('\nexport var Cloudflare = ');
  if (end === -1 || !source.includes('export var BaseCloudflare = ')) throw new Error(`cloudflare SDK: ${clientUrl.pathname} has no BaseCloudflare before Cloudflare; update src/cloudflare/cloudflare-sdk.ts`);
  return source
    .slice(0, end)
    .replace(/^import [^;]*? from "\.\/resources\/[^"]+";\n/gm, '')
    .replace(/ from "(\.{1,2}\/[^"]+)";/g, (_, relative: string) => ` from ${JSON.stringify(new URL(relative, clientUrl).href)};`)
    // Names it in stack traces and CPU profiles (a data: URL says nothing).
    .concat(`\n//# sourceURL=${clientUrl.href}?base-client\n`);
}

async function loadBaseCloudflare(): Promise<BaseCloudflareConstructor> {
  const source = baseClientSource();
  const module = (await import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`)) as { BaseCloudflare?: BaseCloudflareConstructor };
  if (typeof module.BaseCloudflare !== 'function') throw new Error('cloudflare SDK: client.mjs no longer exports BaseCloudflare; update src/cloudflare/cloudflare-sdk.ts');
  return module.BaseCloudflare;
}

const BaseCloudflare = await loadBaseCloudflare();

/** The SDK client with the broker's resources (see CloudflareSdk). */
export function createCloudflareSdk(options: ClientOptions): CloudflareSdk {
  const client = new BaseCloudflare(options);
  return {
    zeroTrust: {
      tunnels: { cloudflared: new Cloudflared(client) },
      access: { applications: new BaseApplications(client), policies: new BasePolicies(client) },
      identityProviders: new BaseIdentityProviders(client),
    },
    dns: { records: new BaseRecords(client) },
    zones: new BaseZones(client),
    accounts: { tokens: new BaseTokens(client) },
    user: { tokens: new BaseUserTokens(client) },
  };
}
