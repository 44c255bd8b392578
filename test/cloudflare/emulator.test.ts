/**
 * The Cloudflare emulator, driven the way the broker drives Cloudflare: the official
 * SDK over real HTTP. Where the SDK cannot express a request (bad JSON, unknown
 * routes, missing auth), plain fetch is used.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import Cloudflare, {
  APIConnectionError,
  APIConnectionTimeoutError,
  BadRequestError,
  ConflictError,
  InternalServerError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
} from 'cloudflare';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  startCloudflareEmulator,
  type CloudflareEmulator,
  type EmulatorOptions,
} from '../../src/cloudflare/emulator/emulator.js';

let emu: CloudflareEmulator;

beforeAll(async () => {
  emu = await startCloudflareEmulator();
});
afterAll(async () => {
  await emu.close();
});
beforeEach(() => {
  emu.reset();
});

function sdk(target: CloudflareEmulator = emu, opts: Partial<ConstructorParameters<typeof Cloudflare>[0]> = {}) {
  return new Cloudflare({ apiToken: target.apiToken, baseURL: target.url, maxRetries: 0, timeout: 5000, ...opts });
}

async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

function decodeToken(token: string): { a: string; t: string; s: string } {
  return JSON.parse(Buffer.from(token, 'base64').toString('utf8'));
}

async function createTunnel(name: string, cf = sdk()) {
  return cf.zeroTrust.tunnels.cloudflared.create({ account_id: emu.accountId, name, config_src: 'cloudflare' });
}

type TunnelConfig = Parameters<Cloudflare['zeroTrust']['tunnels']['cloudflared']['configurations']['update']>[1]['config'];

/** The SDK types `hostname` as required on every ingress rule, yet the mandatory catch-all rule has none. */
function tunnelConfig(ingress: Array<{ hostname?: string; service: string }>): TunnelConfig {
  return { ingress } as unknown as TunnelConfig;
}

async function raw(method: string, path: string, init: { body?: string; token?: string | null } = {}) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (init.token !== null) headers.authorization = `Bearer ${init.token ?? emu.apiToken}`;
  const res = await fetch(`${emu.url}${path}`, { method, headers, body: init.body });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, any> };
}

describe('tunnels', () => {
  it('create returns the tunnel object plus token and credentials_file, and GET token returns the same token decoding to {a,t,s}', async () => {
    const cf = sdk();
    const created = (await createTunnel('tb-one', cf)) as Awaited<ReturnType<typeof createTunnel>> & {
      token: string;
      credentials_file: Record<string, string>;
    };
    expect(created).toMatchObject({
      account_tag: emu.accountId,
      name: 'tb-one',
      deleted_at: null,
      connections: [],
      conns_active_at: null,
      status: 'inactive',
      tun_type: 'cfd_tunnel',
      config_src: 'cloudflare',
      remote_config: true,
    });
    expect(created.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const decoded = decodeToken(created.token);
    expect(decoded.a).toBe(emu.accountId);
    expect(decoded.t).toBe(created.id);
    expect(Buffer.from(decoded.s, 'base64')).toHaveLength(32);
    expect(created.credentials_file).toEqual({
      AccountTag: emu.accountId,
      TunnelID: created.id,
      TunnelName: 'tb-one',
      TunnelSecret: decoded.s,
    });

    const token = await cf.zeroTrust.tunnels.cloudflared.token.get(created.id!, { account_id: emu.accountId });
    expect(token).toBe(created.token);
  });

  it('a tunnel_secret given at create time becomes the token secret; one shorter than 32 bytes is refused with 400', async () => {
    const secret = Buffer.alloc(32, 7).toString('base64');
    const cf = sdk();
    const t = await cf.zeroTrust.tunnels.cloudflared.create({ account_id: emu.accountId, name: 'tb-secret', tunnel_secret: secret });
    const token = await cf.zeroTrust.tunnels.cloudflared.token.get(t.id!, { account_id: emu.accountId });
    expect(decodeToken(token).s).toBe(secret);

    const err = await rejectionOf(
      cf.zeroTrust.tunnels.cloudflared.create({ account_id: emu.accountId, name: 'tb-short', tunnel_secret: 'c2hvcnQ=' }),
    );
    expect(err).toBeInstanceOf(BadRequestError);
    expect(emu.liveTunnels().map((x) => x.name)).toEqual(['tb-secret']);
  });

  it('get returns the created tunnel; an unknown id is a 404 NotFoundError with code 1003', async () => {
    const cf = sdk();
    const t = await createTunnel('tb-get', cf);
    const got = await cf.zeroTrust.tunnels.cloudflared.get(t.id!, { account_id: emu.accountId });
    expect(got).toMatchObject({ id: t.id, name: 'tb-get', deleted_at: null });

    const err = await rejectionOf(
      cf.zeroTrust.tunnels.cloudflared.get('00000000-0000-4000-8000-000000000000', { account_id: emu.accountId }),
    );
    expect(err).toBeInstanceOf(NotFoundError);
    expect((err as NotFoundError).status).toBe(404);
    expect((err as NotFoundError).errors[0]?.code).toBe(1003);
  });

  it('a second live tunnel with the same name is a 409 ConflictError with code 1013, and the name is free again after delete', async () => {
    const cf = sdk();
    const first = await createTunnel('tb-dup', cf);
    const err = await rejectionOf(createTunnel('tb-dup', cf));
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as ConflictError).status).toBe(409);
    expect((err as ConflictError).errors).toEqual([{ code: 1013, message: expect.any(String) }]);
    expect(emu.liveTunnels()).toHaveLength(1);

    await cf.zeroTrust.tunnels.cloudflared.delete(first.id!, { account_id: emu.accountId });
    const second = await createTunnel('tb-dup', cf);
    expect(second.id).not.toBe(first.id);
    expect(emu.allTunnels()).toHaveLength(2);
  });

  it('for-await over the SDK list walks 45 tunnels in pages of 20 and stops at the first empty page (page 4)', async () => {
    const cf = sdk();
    for (let i = 0; i < 45; i++) await createTunnel(`tb-p${String(i).padStart(2, '0')}`, cf);

    const names: string[] = [];
    for await (const t of cf.zeroTrust.tunnels.cloudflared.list({ account_id: emu.accountId, per_page: 20 })) {
      names.push(t.name!);
      if (names.length > 100) throw new Error('paginator did not stop');
    }
    expect(names).toHaveLength(45);
    expect(new Set(names).size).toBe(45);

    const listCalls = emu.requests.filter((r) => r.endpoint === 'tunnel.list');
    expect(listCalls.map((r) => new URLSearchParams(r.path.split('?')[1]).get('page'))).toEqual([null, '2', '3', '4']);
    expect(emu.count('tunnel.list')).toBe(4);

    const page3 = await cf.zeroTrust.tunnels.cloudflared.list({ account_id: emu.accountId, per_page: 20, page: 3 });
    expect(page3.result).toHaveLength(5);
    expect(page3.result_info).toEqual({ page: 3, per_page: 20, count: 5, total_count: 45, total_pages: 3 });
  });

  it('list defaults to 20 per page and refuses per_page above 1000 with 400', async () => {
    const cf = sdk();
    for (let i = 0; i < 21; i++) await createTunnel(`tb-d${i}`, cf);
    const first = await cf.zeroTrust.tunnels.cloudflared.list({ account_id: emu.accountId });
    expect(first.result).toHaveLength(20);
    expect(first.result_info.per_page).toBe(20);

    const err = await rejectionOf(cf.zeroTrust.tunnels.cloudflared.list({ account_id: emu.accountId, per_page: 1001 }));
    expect(err).toBeInstanceOf(BadRequestError);
  });

  it('list filters by name, uuid, include/exclude/name_prefix, status and is_deleted (absent means deleted ones are included)', async () => {
    const cf = sdk();
    const a = await createTunnel('tb-a', cf);
    await createTunnel('tb-b', cf);
    await createTunnel('other-c', cf);
    await cf.zeroTrust.tunnels.cloudflared.delete(a.id!, { account_id: emu.accountId });
    const acct = emu.accountId;
    const names = async (q: Record<string, unknown>) => {
      const page = await cf.zeroTrust.tunnels.cloudflared.list({ account_id: acct, ...q });
      return page.result.map((t) => t.name).sort();
    };

    expect(await names({})).toEqual(['other-c', 'tb-a', 'tb-b']);
    expect(await names({ is_deleted: false })).toEqual(['other-c', 'tb-b']);
    expect(await names({ is_deleted: true })).toEqual(['tb-a']);
    expect(await names({ name: 'tb-b' })).toEqual(['tb-b']);
    expect(await names({ uuid: a.id })).toEqual(['tb-a']);
    expect(await names({ include_prefix: 'tb-', is_deleted: false })).toEqual(['tb-b']);
    expect(await names({ exclude_prefix: 'tb-' })).toEqual(['other-c']);
    expect(await names({ name_prefix: 'other' })).toEqual(['other-c']);
    expect(await names({ status: 'inactive', is_deleted: false })).toEqual(['other-c', 'tb-b']);
  });

  it('delete is soft: deleted_at is set, GET still returns the tunnel, and deleting it again is a 404', async () => {
    const cf = sdk();
    const t = await createTunnel('tb-soft', cf);
    const deleted = await cf.zeroTrust.tunnels.cloudflared.delete(t.id!, { account_id: emu.accountId });
    expect(deleted.deleted_at).toEqual(expect.any(String));

    const got = await cf.zeroTrust.tunnels.cloudflared.get(t.id!, { account_id: emu.accountId });
    expect(got.deleted_at).toBe(deleted.deleted_at);
    expect(emu.liveTunnels()).toHaveLength(0);
    expect(emu.allTunnels()[0]?.deleted_at).toBe(deleted.deleted_at);

    const again = await rejectionOf(cf.zeroTrust.tunnels.cloudflared.delete(t.id!, { account_id: emu.accountId }));
    expect(again).toBeInstanceOf(NotFoundError);
    const token = await rejectionOf(cf.zeroTrust.tunnels.cloudflared.token.get(t.id!, { account_id: emu.accountId }));
    expect(token).toBeInstanceOf(NotFoundError);
  });

  it('edit renames a tunnel; renaming onto another live name is a 409 with code 1013', async () => {
    const cf = sdk();
    const a = await createTunnel('tb-x', cf);
    await createTunnel('tb-y', cf);
    const renamed = await cf.zeroTrust.tunnels.cloudflared.edit(a.id!, { account_id: emu.accountId, name: 'tb-z' });
    expect(renamed.name).toBe('tb-z');
    await createTunnel('tb-x', cf);

    const err = await rejectionOf(cf.zeroTrust.tunnels.cloudflared.edit(a.id!, { account_id: emu.accountId, name: 'tb-y' }));
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as ConflictError).errors[0]?.code).toBe(1013);
  });

  it('delete is refused with 400 code 1022 while a connector is attached, and succeeds after connections.delete', async () => {
    const cf = sdk();
    const t = await createTunnel('tb-busy', cf);
    emu.addConnection(t.id!);
    expect((await cf.zeroTrust.tunnels.cloudflared.get(t.id!, { account_id: emu.accountId })).status).toBe('healthy');

    const err = await rejectionOf(cf.zeroTrust.tunnels.cloudflared.delete(t.id!, { account_id: emu.accountId }));
    expect(err).toBeInstanceOf(BadRequestError);
    expect((err as BadRequestError).status).toBe(400);
    expect((err as BadRequestError).errors[0]?.code).toBe(1022);
    expect(emu.liveTunnels()).toHaveLength(1);

    await cf.zeroTrust.tunnels.cloudflared.connections.delete(t.id!, { account_id: emu.accountId });
    const afterCleanup = await cf.zeroTrust.tunnels.cloudflared.get(t.id!, { account_id: emu.accountId });
    expect(afterCleanup.status).toBe('down');
    await cf.zeroTrust.tunnels.cloudflared.delete(t.id!, { account_id: emu.accountId });
    expect(emu.liveTunnels()).toHaveLength(0);
  });

  it('delete with ?cascade=true (passed as a request option) removes a tunnel that still has connectors', async () => {
    const cf = sdk();
    const t = await createTunnel('tb-cascade', cf);
    emu.addConnection(t.id!);
    const deleted = await cf.zeroTrust.tunnels.cloudflared.delete(t.id!, { account_id: emu.accountId }, { query: { cascade: true } });
    expect(deleted.deleted_at).toEqual(expect.any(String));
    expect(emu.requests.at(-1)?.path).toContain('cascade=true');
    expect(emu.allTunnels()[0]?.connector_ids).toEqual([]);
  });

  it('connections.get lists attached connectors, and connections.delete with client_id removes only that one', async () => {
    const cf = sdk();
    const t = await createTunnel('tb-conns', cf);
    const c1 = emu.addConnection(t.id!);
    const c2 = emu.addConnection(t.id!);
    const listed = [];
    for await (const c of cf.zeroTrust.tunnels.cloudflared.connections.get(t.id!, { account_id: emu.accountId })) listed.push(c);
    expect(listed.map((c) => c.id).sort()).toEqual([c1, c2].sort());
    expect(listed[0]?.conns?.length).toBeGreaterThan(0);

    await cf.zeroTrust.tunnels.cloudflared.connections.delete(t.id!, { account_id: emu.accountId, client_id: c1 });
    const page = await cf.zeroTrust.tunnels.cloudflared.connections.get(t.id!, { account_id: emu.accountId });
    expect(page.result.map((c) => c.id)).toEqual([c2]);
  });

  it('configurations.update stores the config and bumps the version; get returns it; unknown tunnels are 404', async () => {
    const cf = sdk();
    const t = await createTunnel('tb-cfg', cf);
    const config = tunnelConfig([
      { hostname: 'app.tunnels.localhost', service: 'http://localhost:3000' },
      { service: 'http_status:404' },
    ]);
    const put = await cf.zeroTrust.tunnels.cloudflared.configurations.update(t.id!, { account_id: emu.accountId, config });
    expect(put).toMatchObject({ tunnel_id: t.id, version: 1, config, source: 'cloudflare' });
    expect(put.created_at).toEqual(expect.any(String));
    const put2 = await cf.zeroTrust.tunnels.cloudflared.configurations.update(t.id!, { account_id: emu.accountId, config });
    expect(put2.version).toBe(2);

    const got = await cf.zeroTrust.tunnels.cloudflared.configurations.get(t.id!, { account_id: emu.accountId });
    expect(got.config).toEqual(config);
    expect(emu.configuration(t.id!)?.config).toEqual(config);

    const missing = await rejectionOf(
      cf.zeroTrust.tunnels.cloudflared.configurations.update('00000000-0000-4000-8000-000000000000', {
        account_id: emu.accountId,
        config,
      }),
    );
    expect(missing).toBeInstanceOf(NotFoundError);
  });

  it('a configuration whose last ingress rule has a hostname is refused with 400', async () => {
    const cf = sdk();
    const t = await createTunnel('tb-badcfg', cf);
    const err = await rejectionOf(
      cf.zeroTrust.tunnels.cloudflared.configurations.update(t.id!, {
        account_id: emu.accountId,
        config: tunnelConfig([{ hostname: 'a.tunnels.localhost', service: 'http://localhost:1' }]),
      }),
    );
    expect(err).toBeInstanceOf(BadRequestError);
    expect(emu.configuration(t.id!)).toBeUndefined();
  });

  it('the account tunnel limit refuses creation beyond maxTunnels live tunnels', async () => {
    const small = await startCloudflareEmulator({ maxTunnels: 2 });
    try {
      const cf = sdk(small);
      const make = (name: string) => cf.zeroTrust.tunnels.cloudflared.create({ account_id: small.accountId, name });
      const first = await make('one');
      await make('two');
      expect(await rejectionOf(make('three'))).toBeInstanceOf(BadRequestError);
      await cf.zeroTrust.tunnels.cloudflared.delete(first.id!, { account_id: small.accountId });
      await make('three');
      expect(small.liveTunnels()).toHaveLength(2);
    } finally {
      await small.close();
    }
  });
});

describe('dns records', () => {
  const cname = (name: string, content = 'x.cfargotunnel.com') =>
    sdk().dns.records.create({ zone_id: emu.zoneId, type: 'CNAME', name, content, proxied: true, ttl: 1 });

  it('create returns a record with a 32-hex id and the name completed with the zone', async () => {
    const rec = await cname('app', 'abc.cfargotunnel.com');
    expect(rec.id).toMatch(/^[0-9a-f]{32}$/);
    expect(rec).toMatchObject({
      name: 'app.tunnels.localhost',
      type: 'CNAME',
      content: 'abc.cfargotunnel.com',
      proxied: true,
      ttl: 1,
    });
    expect(rec.created_on).toEqual(expect.any(String));
    expect(rec.modified_on).toEqual(expect.any(String));
    expect(emu.dnsRecords()).toHaveLength(1);
  });

  it('a CNAME on a name that already has a record (any case) is a 400 BadRequestError with code 81053', async () => {
    await cname('app.tunnels.localhost');
    const err = await rejectionOf(cname('APP.Tunnels.Localhost'));
    expect(err).toBeInstanceOf(BadRequestError);
    expect((err as BadRequestError).status).toBe(400);
    expect((err as BadRequestError).errors[0]?.code).toBe(81053);

    await sdk().dns.records.create({ zone_id: emu.zoneId, type: 'TXT', name: 'txt.tunnels.localhost', content: 'hello', ttl: 1 });
    expect(await rejectionOf(cname('txt.tunnels.localhost'))).toBeInstanceOf(BadRequestError);
    expect(emu.dnsRecords()).toHaveLength(2);
  });

  it('list by {name: {exact}} (sent as name.exact=) returns only that record, and other filters narrow as documented', async () => {
    const cf = sdk();
    await cname('one.tunnels.localhost', 'aaa.cfargotunnel.com');
    await cname('two.tunnels.localhost', 'bbb.cfargotunnel.com');
    await cf.dns.records.create({ zone_id: emu.zoneId, type: 'TXT', name: 'one-txt.tunnels.localhost', content: 'x', ttl: 1, comment: 'tb' });

    const byName = await cf.dns.records.list({ zone_id: emu.zoneId, name: { exact: 'one.tunnels.localhost' } });
    expect(byName.result.map((r) => r.name)).toEqual(['one.tunnels.localhost']);
    expect(emu.requests.at(-1)?.path).toContain('name.exact=one.tunnels.localhost');

    const names = async (q: Record<string, unknown>) =>
      (await cf.dns.records.list({ zone_id: emu.zoneId, ...q })).result.map((r) => r.name).sort();
    expect(await names({ type: 'CNAME' })).toEqual(['one.tunnels.localhost', 'two.tunnels.localhost']);
    expect(await names({ name: { startswith: 'one' } })).toEqual(['one-txt.tunnels.localhost', 'one.tunnels.localhost']);
    expect(await names({ content: { contains: 'bbb' } })).toEqual(['two.tunnels.localhost']);
    expect(await names({ comment: { exact: 'tb' } })).toEqual(['one-txt.tunnels.localhost']);
    expect(await names({ name: { exact: 'one.tunnels.localhost' }, type: 'TXT' })).toEqual([]);

    const plain = await raw('GET', `/zones/${emu.zoneId}/dns_records?name=two.tunnels.localhost`);
    expect(plain.body.result.map((r: { name: string }) => r.name)).toEqual(['two.tunnels.localhost']);
  });

  it('keeps a record\'s comment: returned by create, get and list, and kept by an edit that leaves it out', async () => {
    const cf = sdk();
    const comment = 'tunnel-broker tb-4f0c2d5e-8b1a-4c3d-9e7f-0a1b2c3d4e5f';
    const rec = await cf.dns.records.create({ zone_id: emu.zoneId, type: 'CNAME', name: 'marked.tunnels.localhost', content: 'abc.cfargotunnel.com', proxied: true, ttl: 1, comment });
    expect(rec.comment).toBe(comment);
    expect((await cf.dns.records.get(rec.id!, { zone_id: emu.zoneId })).comment).toBe(comment);
    const listed = async () => (await cf.dns.records.list({ zone_id: emu.zoneId, type: 'CNAME' })).result.find((r) => r.id === rec.id)?.comment;
    expect(await listed()).toBe(comment);

    await cf.dns.records.edit(rec.id!, { zone_id: emu.zoneId, type: 'CNAME', name: 'marked.tunnels.localhost', content: 'def.cfargotunnel.com', ttl: 1 });
    expect(await listed()).toBe(comment);
  });

  it('list paginates DNS records over more than one page', async () => {
    for (let i = 0; i < 12; i++) await cname(`r${i}.tunnels.localhost`);
    const seen: string[] = [];
    for await (const r of sdk().dns.records.list({ zone_id: emu.zoneId, per_page: 5 })) {
      seen.push(r.id);
      if (seen.length > 50) throw new Error('paginator did not stop');
    }
    expect(new Set(seen).size).toBe(12);
    expect(emu.count('dns.list')).toBe(4);
  });

  it('delete returns {id}; afterwards get and delete are a 404 NotFoundError with code 81044', async () => {
    const cf = sdk();
    const rec = await cname('gone.tunnels.localhost');
    expect(await cf.dns.records.get(rec.id, { zone_id: emu.zoneId })).toMatchObject({ id: rec.id });
    expect(await cf.dns.records.delete(rec.id, { zone_id: emu.zoneId })).toEqual({ id: rec.id });
    for (const call of [cf.dns.records.get(rec.id, { zone_id: emu.zoneId }), cf.dns.records.delete(rec.id, { zone_id: emu.zoneId })]) {
      const err = await rejectionOf(call);
      expect(err).toBeInstanceOf(NotFoundError);
      expect((err as NotFoundError).errors[0]?.code).toBe(81044);
    }
    // The name is free again once its record is gone.
    await cname('gone.tunnels.localhost');
  });

  it('deleting a tunnel leaves its DNS record in place', async () => {
    const cf = sdk();
    const t = await createTunnel('tb-dns', cf);
    await cname('keep.tunnels.localhost', `${t.id}.cfargotunnel.com`);
    await cf.zeroTrust.tunnels.cloudflared.delete(t.id!, { account_id: emu.accountId });
    expect(emu.dnsRecords().map((r) => r.content)).toEqual([`${t.id}.cfargotunnel.com`]);
  });

  it('deletions() records each successful delete once with the request that made it: a lost response counts, a repeated delete (404) and a faulted one do not', async () => {
    const cf = sdk();
    const t = await createTunnel('tb-del', cf);
    const rec = await cname('del.tunnels.localhost', `${t.id}.cfargotunnel.com`);
    emu.injectFault({ kind: 'error5xx', status: 503, endpoint: 'dns.delete', times: 1 });
    expect(await rejectionOf(cf.dns.records.delete(rec.id, { zone_id: emu.zoneId }))).toBeInstanceOf(InternalServerError);
    emu.injectFault({ kind: 'lostResponse', endpoint: 'dns.delete', times: 1 });
    expect(await rejectionOf(cf.dns.records.delete(rec.id, { zone_id: emu.zoneId }))).toBeInstanceOf(InternalServerError);
    expect(await rejectionOf(cf.dns.records.delete(rec.id, { zone_id: emu.zoneId }))).toBeInstanceOf(NotFoundError);
    await cf.zeroTrust.tunnels.cloudflared.delete(t.id!, { account_id: emu.accountId });
    expect(await rejectionOf(cf.zeroTrust.tunnels.cloudflared.delete(t.id!, { account_id: emu.accountId }))).toBeInstanceOf(NotFoundError);

    const deletions = emu.deletions();
    expect(deletions).toMatchObject([
      { resource: 'dns_record', id: rec.id, name: 'del.tunnels.localhost', content: `${t.id}.cfargotunnel.com` },
      { resource: 'tunnel', id: t.id, name: 'tb-del' },
    ]);
    // The record went with the lost response (the second dns.delete), the tunnel with the first tunnel.delete.
    expect(deletions.map((d) => emu.requests[d.requestIndex])).toMatchObject([
      { endpoint: 'dns.delete', status: 502, fault: 'lostResponse' },
      { endpoint: 'tunnel.delete', status: 200 },
    ]);
    expect(emu.requests.filter((r) => r.endpoint === 'dns.delete').map((r) => r.status)).toEqual([503, 502, 404]);
    emu.reset();
    expect(emu.deletions()).toEqual([]);
  });
});

describe('auth, scope and protocol errors', () => {
  it('a wrong bearer token is a 403 PermissionDeniedError with code 10000, and so is a missing one', async () => {
    const bad = new Cloudflare({ apiToken: 'not-the-token', baseURL: emu.url, maxRetries: 0 });
    const err = await rejectionOf(bad.zeroTrust.tunnels.cloudflared.list({ account_id: emu.accountId }));
    expect(err).toBeInstanceOf(PermissionDeniedError);
    expect((err as PermissionDeniedError).status).toBe(403);
    expect((err as PermissionDeniedError).errors[0]?.code).toBe(10000);

    const none = await raw('GET', `/accounts/${emu.accountId}/cfd_tunnel`, { token: null });
    expect(none.status).toBe(403);
    expect(none.body).toMatchObject({ success: false, errors: [{ code: 10000 }] });
    expect(emu.liveTunnels()).toHaveLength(0);
  });

  it('another account is a 403 with code 9109, a malformed account id a 400 with code 7003', async () => {
    const cf = sdk();
    const other = await rejectionOf(cf.zeroTrust.tunnels.cloudflared.list({ account_id: 'a'.repeat(32) }));
    expect(other).toBeInstanceOf(PermissionDeniedError);
    expect((other as PermissionDeniedError).errors[0]?.code).toBe(9109);
    const malformed = await rejectionOf(cf.dns.records.list({ zone_id: 'nope' }));
    expect(malformed).toBeInstanceOf(BadRequestError);
    expect((malformed as BadRequestError).errors[0]?.code).toBe(7003);
  });

  it('an unknown route is a 404 envelope with code 7000 and a malformed JSON body a 400 envelope with code 6007', async () => {
    const unknown = await raw('GET', `/accounts/${emu.accountId}/nothing_here`);
    expect(unknown.status).toBe(404);
    expect(unknown.body).toEqual({ success: false, errors: [{ code: 7000, message: expect.any(String) }], messages: [], result: null });
    expect(emu.requests.at(-1)?.endpoint).toBe('unknown');

    const malformed = await raw('POST', `/accounts/${emu.accountId}/cfd_tunnel`, { body: '{"name": "x"' });
    expect(malformed.status).toBe(400);
    expect(malformed.body.errors[0].code).toBe(6007);
    expect(emu.liveTunnels()).toHaveLength(0);
  });

  it('every request is logged in order with its endpoint and status, and counted per endpoint', async () => {
    const cf = sdk();
    const t = await createTunnel('tb-log', cf);
    await rejectionOf(createTunnel('tb-log', cf));
    await cf.zeroTrust.tunnels.cloudflared.token.get(t.id!, { account_id: emu.accountId });
    expect(emu.requests.map((r) => [r.method, r.endpoint, r.status])).toEqual([
      ['POST', 'tunnel.create', 200],
      ['POST', 'tunnel.create', 409],
      ['GET', 'tunnel.token', 200],
    ]);
    expect(emu.count('tunnel.create')).toBe(2);
    expect(emu.count('tunnel.delete')).toBe(0);
  });

  it('two emulators in one process keep separate state', async () => {
    const other = await startCloudflareEmulator({ accountId: 'b'.repeat(32) });
    try {
      await createTunnel('tb-here');
      await sdk(other).zeroTrust.tunnels.cloudflared.create({ account_id: other.accountId, name: 'tb-there' });
      expect(emu.liveTunnels().map((t) => t.name)).toEqual(['tb-here']);
      expect(other.liveTunnels().map((t) => t.name)).toEqual(['tb-there']);
    } finally {
      await other.close();
    }
  });
});

describe('faults', () => {
  it('error5xx answers the next `times` matching requests with the given status, then expires', async () => {
    const cf = sdk();
    emu.injectFault({ kind: 'error5xx', endpoint: 'tunnel.create', status: 503, times: 2 });
    // A different endpoint is not affected.
    await cf.zeroTrust.tunnels.cloudflared.list({ account_id: emu.accountId });
    for (const name of ['tb-f1', 'tb-f2']) {
      const err = await rejectionOf(createTunnel(name, cf));
      expect(err).toBeInstanceOf(InternalServerError);
      expect((err as InternalServerError).status).toBe(503);
    }
    expect(emu.liveTunnels()).toHaveLength(0);
    await createTunnel('tb-f3', cf);
    expect(emu.liveTunnels().map((t) => t.name)).toEqual(['tb-f3']);
    expect(emu.faults()).toEqual([]);
  });

  it('rateLimit answers 429 RateLimitError with code 971 and a retry-after header', async () => {
    emu.injectFault({ kind: 'rateLimit', retryAfterSec: 7 });
    const err = await rejectionOf(sdk().zeroTrust.tunnels.cloudflared.list({ account_id: emu.accountId }));
    expect(err).toBeInstanceOf(RateLimitError);
    expect((err as RateLimitError).status).toBe(429);
    expect((err as RateLimitError).headers.get('retry-after')).toBe('7');
    expect((err as RateLimitError).errors[0]?.code).toBe(971);
  });

  it('an SDK allowed one retry waits out retry-after and succeeds once a times:1 rate limit has expired', async () => {
    emu.injectFault({ kind: 'rateLimit', endpoint: 'tunnel.create', retryAfterSec: 0.3, times: 1 });
    const started = performance.now();
    const t = await createTunnel('tb-retry', sdk(emu, { maxRetries: 1 }));
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    expect(t.name).toBe('tb-retry');
    expect(emu.requests.map((r) => r.status)).toEqual([429, 200]);
  });

  it('hang never answers, so the SDK times out with APIConnectionTimeoutError and nothing is created', async () => {
    emu.injectFault({ kind: 'hang', endpoint: 'tunnel.create' });
    const err = await rejectionOf(createTunnel('tb-hang', sdk(emu, { timeout: 300 })));
    expect(err).toBeInstanceOf(APIConnectionTimeoutError);
    expect(emu.liveTunnels()).toHaveLength(0);
    expect(emu.requests[0]).toMatchObject({ endpoint: 'tunnel.create', status: 0, fault: 'hang' });
  });

  it('close() ends hung requests instead of waiting for them', async () => {
    const own = await startCloudflareEmulator();
    own.injectFault({ kind: 'hang' });
    const pending = rejectionOf(sdk(own, { timeout: 60_000 }).zeroTrust.tunnels.cloudflared.list({ account_id: own.accountId }));
    await own.waitForRequest({ endpoint: 'tunnel.list', answered: true });
    const started = performance.now();
    await own.close();
    expect(await pending).toBeInstanceOf(APIConnectionError);
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it('a latency rule and setLatency each delay the answer by at least the given time', async () => {
    const cf = sdk();
    emu.injectFault({ kind: 'latency', latencyMs: 200, endpoint: 'tunnel.list', times: 1 });
    let started = performance.now();
    await cf.zeroTrust.tunnels.cloudflared.list({ account_id: emu.accountId });
    expect(performance.now() - started).toBeGreaterThanOrEqual(195);
    expect(emu.requests.at(-1)?.fault).toBe('latency');

    emu.setLatency(150);
    started = performance.now();
    await cf.zeroTrust.tunnels.cloudflared.list({ account_id: emu.accountId });
    expect(performance.now() - started).toBeGreaterThanOrEqual(145);
  });

  it('lostResponse performs the create but the client sees a 502, so retrying the same name is a 409', async () => {
    const cf = sdk();
    emu.injectFault({ kind: 'lostResponse', endpoint: 'tunnel.create', times: 1 });
    const err = await rejectionOf(createTunnel('tb-lost', cf));
    expect(err).toBeInstanceOf(InternalServerError);
    expect((err as InternalServerError).status).toBe(502);
    expect(emu.liveTunnels().map((t) => t.name)).toEqual(['tb-lost']);

    const retry = await rejectionOf(createTunnel('tb-lost', cf));
    expect(retry).toBeInstanceOf(ConflictError);
  });

  it('lostResponse with lostAs socketReset performs the operation and the client sees a connection error', async () => {
    const cf = sdk();
    emu.injectFault({ kind: 'lostResponse', lostAs: 'socketReset', endpoint: 'dns.create', times: 1 });
    const err = await rejectionOf(
      cf.dns.records.create({ zone_id: emu.zoneId, type: 'CNAME', name: 'reset', content: 'x.cfargotunnel.com', ttl: 1 }),
    );
    expect(err).toBeInstanceOf(APIConnectionError);
    expect(emu.dnsRecords().map((r) => r.name)).toEqual(['reset.tunnels.localhost']);
  });

  it('the remover from injectFault removes only its rule, and clearFaults removes the rest', async () => {
    const cf = sdk();
    const removeList = emu.injectFault({ kind: 'error5xx', endpoint: 'tunnel.list' });
    emu.injectFault({ kind: 'error5xx', endpoint: 'dns.list' });
    expect(await rejectionOf(cf.zeroTrust.tunnels.cloudflared.list({ account_id: emu.accountId }))).toBeInstanceOf(InternalServerError);
    removeList();
    await cf.zeroTrust.tunnels.cloudflared.list({ account_id: emu.accountId });
    expect(await rejectionOf(cf.dns.records.list({ zone_id: emu.zoneId }))).toBeInstanceOf(InternalServerError);
    emu.clearFaults();
    await cf.dns.records.list({ zone_id: emu.zoneId });
  });

  it('method and pathIncludes narrow which requests a rule hits', async () => {
    const cf = sdk();
    const t = await createTunnel('tb-narrow', cf);
    emu.injectFault({ kind: 'error5xx', method: 'DELETE', pathIncludes: t.id! });
    await cf.zeroTrust.tunnels.cloudflared.get(t.id!, { account_id: emu.accountId });
    const other = await createTunnel('tb-other', cf);
    await cf.zeroTrust.tunnels.cloudflared.delete(other.id!, { account_id: emu.accountId });
    expect(await rejectionOf(cf.zeroTrust.tunnels.cloudflared.delete(t.id!, { account_id: emu.accountId }))).toBeInstanceOf(
      InternalServerError,
    );
  });

  it('probability draws from the seeded PRNG: the same seed gives the same hit pattern, and 0 never hits', async () => {
    const listOk = async (options: EmulatorOptions, probability: number) => {
      const e = await startCloudflareEmulator(options);
      try {
        e.injectFault({ kind: 'error5xx', probability });
        const cf = sdk(e);
        const hits: boolean[] = [];
        for (let i = 0; i < 30; i++) {
          try {
            await cf.dns.records.list({ zone_id: e.zoneId });
            hits.push(false);
          } catch (err) {
            hits.push(err instanceof InternalServerError);
          }
        }
        return hits;
      } finally {
        await e.close();
      }
    };
    const a = await listOk({ seed: 42 }, 0.5);
    const b = await listOk({ seed: 42 }, 0.5);
    expect(a).toEqual(b);
    expect(a.filter(Boolean).length).toBeGreaterThan(0);
    expect(a.filter(Boolean).length).toBeLessThan(30);
    expect((await listOk({ seed: 42 }, 0)).some(Boolean)).toBe(false);
  });

  it('an invalid rule is refused', () => {
    expect(() => emu.injectFault({ kind: 'explode' } as never)).toThrow(/kind/);
    expect(() => emu.injectFault({ kind: 'error5xx', status: 404 })).toThrow(/status/);
    expect(() => emu.injectFault({ kind: 'error5xx', probability: 2 })).toThrow(/probability/);
    expect(emu.faults()).toEqual([]);
  });
});

describe('HTTP control API under /__emulator', () => {
  const control = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${emu.controlUrl}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as any };
  };

  it('POST /faults installs a rule that hits the next request, and DELETE /faults clears all rules', async () => {
    const cf = sdk();
    const added = await control('POST', '/faults', { kind: 'error5xx', endpoint: 'tunnel.list', status: 500, times: 5 });
    expect(added.status).toBe(201);
    expect(added.body.id).toEqual(expect.any(String));
    expect(await rejectionOf(cf.zeroTrust.tunnels.cloudflared.list({ account_id: emu.accountId }))).toBeInstanceOf(InternalServerError);
    expect(emu.faults()).toMatchObject([{ id: added.body.id, remaining: 4 }]);

    expect((await control('DELETE', '/faults')).body).toEqual({ cleared: 1 });
    await cf.zeroTrust.tunnels.cloudflared.list({ account_id: emu.accountId });

    const invalid = await control('POST', '/faults', { kind: 'nope' });
    expect(invalid.status).toBe(400);
  });

  it('POST /latency delays API answers, GET /state reports tunnels, records and counts, POST /reset wipes them', async () => {
    const cf = sdk();
    const t = await createTunnel('tb-state', cf);
    await cf.dns.records.create({ zone_id: emu.zoneId, type: 'CNAME', name: 'st', content: `${t.id}.cfargotunnel.com`, ttl: 1 });

    expect((await control('POST', '/latency', { ms: 120 })).body).toEqual({ latencyMs: 120 });
    const started = performance.now();
    await cf.zeroTrust.tunnels.cloudflared.get(t.id!, { account_id: emu.accountId });
    expect(performance.now() - started).toBeGreaterThanOrEqual(115);
    expect((await control('POST', '/latency', { ms: -1 })).status).toBe(400);

    const state = await control('GET', '/state');
    expect(state.status).toBe(200);
    expect(state.body.tunnels.map((x: { name: string }) => x.name)).toEqual(['tb-state']);
    expect(state.body.dnsRecords.map((x: { name: string }) => x.name)).toEqual(['st.tunnels.localhost']);
    expect(state.body.requestCounts).toEqual({ 'tunnel.create': 1, 'dns.create': 1, 'tunnel.get': 1 });
    expect(state.body.latencyMs).toBe(120);

    expect((await control('POST', '/reset')).status).toBe(200);
    const after = await control('GET', '/state');
    expect(after.body).toMatchObject({ tunnels: [], dnsRecords: [], requestCounts: {}, totalRequests: 0, latencyMs: 0 });
  });

  it('POST /tunnels/:id/connections attaches a connector over HTTP, which blocks a plain delete', async () => {
    const cf = sdk();
    const t = await createTunnel('tb-ctl', cf);
    const added = await control('POST', `/tunnels/${t.id}/connections`);
    expect(added.status).toBe(201);
    expect(emu.liveTunnels()[0]?.connector_ids).toEqual([added.body.connectorId]);
    const err = await rejectionOf(cf.zeroTrust.tunnels.cloudflared.delete(t.id!, { account_id: emu.accountId }));
    expect((err as BadRequestError).errors[0]?.code).toBe(1022);

    expect((await control('POST', '/tunnels/00000000-0000-4000-8000-000000000000/connections')).status).toBe(404);
    expect((await control('GET', '/nope')).status).toBe(404);
  });
});

describe('standalone runner (npm run emulator)', () => {
  it('prints its base URL first, serves the SDK on it, and exits 0 on SIGTERM', async () => {
    const mainPath = fileURLToPath(new URL('../../src/cloudflare/emulator/main.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', mainPath, '--port', '0', '--zone-name', 'dev.localhost'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const lines = createInterface({ input: child.stdout! });
      const url = await new Promise<string>((resolve, reject) => {
        lines.once('line', resolve);
        child.once('exit', (code) => reject(new Error(`runner exited early with ${code}`)));
      });
      lines.close();
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/client\/v4$/);

      const cf = new Cloudflare({ apiToken: 'emulator-token', baseURL: url, maxRetries: 0, timeout: 5000 });
      const rec = await cf.dns.records.create({
        zone_id: 'fedcba9876543210fedcba9876543210',
        type: 'CNAME',
        name: 'dev',
        content: 'x.cfargotunnel.com',
        ttl: 1,
      });
      expect(rec.name).toBe('dev.dev.localhost');

      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
