import { APIError } from 'cloudflare/core/error';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseClientSource, createCloudflareSdk } from '../../src/cloudflare/cloudflare-sdk.js';
import { type CloudflareEmulator, startCloudflareEmulator } from '../../src/cloudflare/emulator/emulator.js';
import { translateUpstreamError } from '../../src/cloudflare/upstream-error.js';

describe('the Cloudflare SDK surface the broker loads', () => {
  let emulator: CloudflareEmulator;
  beforeAll(async () => {
    emulator = await startCloudflareEmulator({ zoneName: 'tunnels.test' });
  });
  afterAll(async () => {
    await emulator?.close();
  });

  it('is the SDK client module without its resource imports, every import absolute into the installed SDK', () => {
    const source = baseClientSource();
    expect(source).toContain('export var BaseCloudflare = ');
    expect(source).not.toContain('export var Cloudflare = ');
    expect(source).not.toMatch(/from "\.{1,2}\//);
    expect(source).not.toMatch(/\/resources\//);
    expect(source).toMatch(/from "file:\/\/\/.*\/node_modules\/cloudflare\/core\/error\.mjs"/);
  });

  it('creates, reads and lists tunnels and DNS records through the SDK against the emulator, and its errors are the SDK\'s own classes', async () => {
    const sdk = createCloudflareSdk({ apiToken: emulator.apiToken, apiKey: null, apiEmail: null, userServiceKey: null, baseURL: emulator.url, maxRetries: 0, logLevel: 'off' });
    const tunnel = await sdk.zeroTrust.tunnels.cloudflared.create({ account_id: emulator.accountId, name: 'tb-sdk-surface', config_src: 'cloudflare' });
    expect(tunnel.id).toEqual(expect.any(String));
    const token = await sdk.zeroTrust.tunnels.cloudflared.token.get(tunnel.id!, { account_id: emulator.accountId });
    expect(typeof token).toBe('string');
    const record = await sdk.dns.records.create({ zone_id: emulator.zoneId, type: 'CNAME', name: 'sdk.tunnels.test', content: `${tunnel.id}.cfargotunnel.com`, proxied: true, ttl: 1 });
    const listed: string[] = [];
    for await (const r of sdk.dns.records.list({ zone_id: emulator.zoneId, per_page: 1 })) listed.push(r.id);
    expect(listed).toContain(record.id);
    expect((await sdk.zones.get({ zone_id: emulator.zoneId })).id).toBe(emulator.zoneId);

    const missing = await sdk.zeroTrust.tunnels.cloudflared.get('00000000-0000-4000-8000-000000000000', { account_id: emulator.accountId }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(APIError);
    expect(translateUpstreamError('tunnel.get', missing).kind).toBe('not_found');
  });
});
