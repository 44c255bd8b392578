import Cloudflare from 'cloudflare';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CloudflareEmulator, startCloudflareEmulator } from '../../src/cloudflare/emulator/emulator.js';

let emulator: CloudflareEmulator;
let client: Cloudflare;
let account_id: string;
beforeAll(async () => {
  emulator = await startCloudflareEmulator({ zoneName: 'tunnels.test' });
  client = new Cloudflare({ apiToken: emulator.apiToken, baseURL: emulator.url, maxRetries: 0 });
  account_id = emulator.accountId;
});
afterAll(async () => {
  await emulator?.close();
});

const app = (name: string, domain: string, policies: string[]) =>
  client.zeroTrust.access.applications.create({ account_id, type: 'self_hosted', name, domain, session_duration: '24h', policies: policies.map((id, i) => ({ id, precedence: i + 1 })) } as never) as Promise<{ id: string }>;

describe('the emulator: Access applications and reusable policies', () => {
  it('serves them to the SDK, the most specific application wins, a policy in use cannot go, lists page to the end', async () => {
    const team = await client.zeroTrust.access.policies.create({ account_id, name: 'team', decision: 'allow', include: [{ email_domain: { domain: 'team.example' } }] });
    const everyone = await client.zeroTrust.access.policies.create({ account_id, name: 'everyone', decision: 'bypass', include: [{ everyone: {} }] });
    const wildcard = await app('wild', '*.tunnels.test', [team.id!]);
    await app('one', 'open.tunnels.test', [everyone.id!]);

    expect(emulator.audience('closed.tunnels.test')).toEqual({ gate: 'login', appId: wildcard.id, appName: 'wild', emails: [], emailDomains: ['team.example'] });
    expect(emulator.audience('open.tunnels.test')).toMatchObject({ gate: 'public', appName: 'one' });
    // One level only, as Cloudflare's wildcards.
    expect(emulator.audience('a.b.tunnels.test')).toEqual({ gate: 'none' });
    expect(emulator.canOpen('closed.tunnels.test', 'ada@team.example')).toBe(true);
    expect(emulator.canOpen('closed.tunnels.test', null)).toBe(false);

    await expect(client.zeroTrust.access.policies.delete(team.id!, { account_id })).rejects.toMatchObject({ status: 400 });
    await expect(client.zeroTrust.access.applications.get('no-such-app', { account_id })).rejects.toMatchObject({ status: 404 });

    for (let i = 0; i < 4; i++) await app(`extra-${i}`, `e${i}.tunnels.test`, []);
    const names: string[] = [];
    for await (const a of client.zeroTrust.access.applications.list({ account_id, per_page: 2 } as never)) names.push((a as { name: string }).name);
    expect(names).toHaveLength(6);
    const exact: string[] = [];
    for await (const a of client.zeroTrust.access.applications.list({ account_id, name: 'one', exact: true })) exact.push((a as { name: string }).name);
    expect(exact).toEqual(['one']);
    const idps: string[] = [];
    for await (const idp of client.zeroTrust.identityProviders.list({ account_id })) idps.push((idp as { type: string }).type);
    expect(idps).toEqual(['onetimepin']);
  });

  it('injects faults into Access endpoints, and logs which proxied hostnames had no gate after each change', async () => {
    emulator.reset();
    const remove = emulator.injectFault({ endpoint: 'access.app.create', kind: 'error5xx', status: 503, times: 1 });
    await expect(app('x', 'x.tunnels.test', [])).rejects.toMatchObject({ status: 503 });
    remove();
    await client.dns.records.create({ zone_id: emulator.zoneId, type: 'CNAME', name: 'bare.tunnels.test', content: '6f9619ff-8b86-4011-b42d-00c04fc964ff.cfargotunnel.com', proxied: true, ttl: 1 });
    await app('bare', 'bare.tunnels.test', []);
    expect(emulator.gateLog().map((e) => [e.endpoint, e.ungated])).toEqual([['dns.create', ['bare.tunnels.test']], ['access.app.create', []]]);
  });
});
