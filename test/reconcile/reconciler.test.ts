import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { createCloudflareClient } from '../../src/cloudflare/cloudflare-client.js';
import { RECONCILE_LOCK_KEY as LOCK_KEY } from '../../src/reconcile/reconcile-lock.js';
import type { ReconcileReport } from '../../src/reconcile/reconcile-report.js';
import { Reconciler, type ReconcilerOptions } from '../../src/reconcile/reconciler.js';
import { eventually, startTestBroker, TEST_DOMAIN, type TestBroker, type TestBrokerOptions } from '../helpers/broker.js';

const PREFIX = 'tb-';

const brokers: TestBroker[] = [];
afterEach(async () => {
  // Newest first: a broker sharing another's database must close before that one drops it.
  for (const b of brokers.splice(0).reverse()) await b.close();
});

async function broker(options: TestBrokerOptions = {}): Promise<TestBroker> {
  const b = await startTestBroker(options);
  brokers.push(b);
  return b;
}

/**
 * A reconciler on the broker's own clients. Grace 0 makes everything old enough at once;
 * tests of the grace period itself use the configured one.
 */
function reconciler(b: TestBroker, options: Partial<ReconcilerOptions> = {}): Reconciler {
  return new Reconciler({
    prisma: b.app.prisma,
    redis: b.app.redis,
    provider: b.app.tunnelProvider,
    logger: b.app.log.child({ component: 'reconciler-test' }),
    tunnelDomain: b.config.tunnels.domain,
    tunnelNamePrefix: b.config.cloudflare.tunnelNamePrefix,
    intervalMs: 60_000,
    graceMs: 0,
    ...options,
  });
}

/** Resources made straight through the SDK: what a crashed broker or someone else leaves upstream. */
function upstream(b: TestBroker) {
  const client = createCloudflareClient(b.config.cloudflare);
  return {
    async tunnel(name: string): Promise<string> {
      const t = await client.zeroTrust.tunnels.cloudflared.create({ account_id: b.emulator.accountId, name, config_src: 'cloudflare' });
      return t.id!;
    },
    async cname(name: string, target: string, comment?: string): Promise<string> {
      const r = await client.dns.records.create({ zone_id: b.emulator.zoneId, type: 'CNAME', name, content: target, proxied: true, ttl: 1, comment });
      return r.id!;
    },
    async deleteTunnel(cfTunnelId: string): Promise<void> {
      await client.zeroTrust.tunnels.cloudflared.delete(cfTunnelId, { account_id: b.emulator.accountId });
    },
    async txt(name: string): Promise<string> {
      const r = await client.dns.records.create({ zone_id: b.emulator.zoneId, type: 'TXT', name, content: 'hello', ttl: 1 });
      return r.id!;
    },
  };
}

const target = (cfTunnelId: string) => `${cfTunnelId}.cfargotunnel.com`;
const label = () => `s${randomUUID().slice(0, 8)}`;

async function createViaApi(b: TestBroker) {
  const userId = `user-${randomUUID()}`;
  const res = await b.app.inject({ method: 'POST', url: '/v1/tunnels', headers: b.auth(userId), payload: { port: 3000 } });
  expect(res.statusCode).toBe(201);
  const { tunnelId } = res.json() as { tunnelId: string };
  const row = await b.app.prisma.tunnel.findUniqueOrThrow({ where: { id: tunnelId } });
  return { userId, row, cfTunnelId: row.cfTunnelId!, dnsRecordId: row.dnsRecordId! };
}

/** An orphan as a broker that crashed after its upstream calls leaves it: tunnel `tb-<id>` and its CNAME, no row. */
async function orphan(b: TestBroker, options: { withRecord?: boolean } = {}) {
  const rowId = randomUUID();
  const hostname = `${label()}.${b.config.tunnels.domain}`;
  const cfTunnelId = await upstream(b).tunnel(`${PREFIX}${rowId}`);
  const dnsRecordId = options.withRecord === false ? null : await upstream(b).cname(hostname, target(cfTunnelId));
  return { rowId, hostname, cfTunnelId, dnsRecordId };
}

const liveTunnelIds = (b: TestBroker) => new Set(b.emulator.liveTunnels().map((t) => t.id));
const recordIds = (b: TestBroker) => new Set(b.emulator.dnsRecords().map((r) => r.id));
const deletesOf = (b: TestBroker, endpoint: 'tunnel.delete' | 'dns.delete' | 'tunnel.connections.delete', id: string) =>
  b.emulator.requests.filter((r) => r.endpoint === endpoint && r.path.includes(id));
const removedIds = (report: ReconcileReport) => report.removed.map((e) => e.id).sort();
const skippedAs = (report: ReconcileReport, id: string) => report.skipped.find((e) => e.id === id)?.reason;

describe('orphan removal', () => {
  it('removes an orphan tunnel older than the grace period, connectors and all, and its DNS record', async () => {
    const b = await broker();
    const o = await orphan(b);
    b.emulator.addConnection(o.cfTunnelId);

    const report = await reconciler(b).reconcile();

    expect(report.status).toBe('completed');
    expect(report.removed).toEqual(expect.arrayContaining([
      expect.objectContaining({ resource: 'tunnel', id: o.cfTunnelId, name: `${PREFIX}${o.rowId}`, reason: 'no_row', rowId: o.rowId }),
      expect.objectContaining({ resource: 'dns_record', id: o.dnsRecordId, name: o.hostname, target: target(o.cfTunnelId), reason: 'no_row' }),
    ]));
    expect(report.failed).toEqual([]);
    expect(liveTunnelIds(b).has(o.cfTunnelId)).toBe(false);
    expect(recordIds(b).has(o.dnsRecordId!)).toBe(false);
    // Connections cleaned up first, so the delete was not refused with 1022.
    const tunnelRequests = b.emulator.requests.filter((r) => r.path.includes(o.cfTunnelId) && r.method === 'DELETE');
    expect(tunnelRequests.map((r) => [r.endpoint, r.status])).toEqual([['tunnel.connections.delete', 200], ['tunnel.delete', 200]]);
    // The record went before the tunnel that proves it is ours.
    const order = b.emulator.requests.map((r) => r.endpoint);
    expect(order.indexOf('dns.delete')).toBeLessThan(order.indexOf('tunnel.delete'));
    expect(b.logs.events('reconcile.deleted').map((l) => l.id)).toEqual(expect.arrayContaining([o.cfTunnelId, o.dnsRecordId]));
  });

  it('keeps an orphan younger than the grace period', async () => {
    const b = await broker();
    const o = await orphan(b);

    // The app's own reconciler, with the configured default grace of 600 s.
    expect(b.config.reconcile.graceSeconds).toBe(600);
    const report = await b.app.reconciler!.reconcile();

    expect(report.removed).toEqual([]);
    expect(skippedAs(report, o.cfTunnelId)).toBe('within_grace');
    expect(skippedAs(report, o.dnsRecordId!)).toBe('within_grace');
    expect(liveTunnelIds(b).has(o.cfTunnelId)).toBe(true);
    expect(recordIds(b).has(o.dnsRecordId!)).toBe(true);
    expect(b.emulator.count('tunnel.delete') + b.emulator.count('dns.delete')).toBe(0);
  });

  it('keeps live tunnels and their records, including a create still in progress, and removes what an ended row left upstream', async () => {
    const b = await broker();
    const live = await createViaApi(b);
    const ended = await createViaApi(b);
    // Its teardown never happened upstream (say the response was lost and the row was ended by hand).
    await b.app.prisma.tunnel.update({ where: { id: ended.row.id }, data: { status: 'ended', endReason: 'deleted', endedAt: new Date() } });
    // A create in progress: the row is `creating` and has no cf_tunnel_id yet, its tunnel and CNAME exist.
    const creatingId = randomUUID();
    const creatingHost = `${label()}.${b.config.tunnels.domain}`;
    await b.app.prisma.tunnel.create({ data: { id: creatingId, ownerId: 'someone', slug: creatingHost.split('.')[0]!, hostname: creatingHost, port: 3000, status: 'creating' } });
    const creatingTunnel = await upstream(b).tunnel(`${PREFIX}${creatingId}`);
    const creatingRecord = await upstream(b).cname(creatingHost, target(creatingTunnel));

    const report = await reconciler(b).reconcile();

    expect(removedIds(report)).toEqual([ended.cfTunnelId, ended.dnsRecordId].sort());
    expect(report.removed.every((e) => e.reason === 'row_ended' && e.rowId === ended.row.id)).toBe(true);
    for (const id of [live.cfTunnelId, live.dnsRecordId, creatingTunnel, creatingRecord]) expect(skippedAs(report, id)).toBe('live_row');
    expect(liveTunnelIds(b)).toEqual(new Set([live.cfTunnelId, creatingTunnel]));
    expect(recordIds(b)).toEqual(new Set([live.dnsRecordId, creatingRecord]));
  });

  it('removes a DNS record of ours that no live row references, even when its tunnel is live or already gone', async () => {
    const b = await broker();
    const live = await createViaApi(b);
    // A stray second name for a live tunnel: no row references it.
    const stray = await upstream(b).cname(`${label()}.${b.config.tunnels.domain}`, target(live.cfTunnelId));
    // A record left behind by a row that ended and whose tunnel is already deleted upstream:
    // only the database's cf_tunnel_id still proves it is ours.
    const ended = await createViaApi(b);
    expect((await b.app.inject({ method: 'DELETE', url: `/v1/tunnels/${ended.row.id}`, headers: b.auth(ended.userId) })).statusCode).toBe(204);
    const leftover = await upstream(b).cname(ended.row.hostname, target(ended.cfTunnelId));

    const report = await reconciler(b).reconcile();

    expect(removedIds(report)).toEqual([stray, leftover].sort());
    expect(report.removed.find((e) => e.id === leftover)).toMatchObject({ reason: 'row_ended', rowId: ended.row.id });
    expect(report.removed.find((e) => e.id === stray)).toMatchObject({ reason: 'no_row' });
    expect(liveTunnelIds(b).has(live.cfTunnelId)).toBe(true);
    expect(recordIds(b)).toEqual(new Set([live.dnsRecordId]));
  });

  it('leaves alone a tunnel that a record it cannot remove still points at, so the record stays provably ours', async () => {
    const b = await broker({ env: { CLOUDFLARE_MAX_RETRIES: '0' } });
    const o = await orphan(b);
    const removeFault = b.emulator.injectFault({ endpoint: 'dns.delete', kind: 'error5xx', status: 503 });
    try {
      const report = await reconciler(b).reconcile();
      expect(report.failed).toEqual([expect.objectContaining({ id: o.dnsRecordId, resource: 'dns_record' })]);
      expect(skippedAs(report, o.cfTunnelId)).toBe('dns_record_remains');
      expect(report.status).toBe('interrupted');
      expect(report.interruptedBy).toBe('upstream_unavailable');
      expect(liveTunnelIds(b).has(o.cfTunnelId)).toBe(true);
    } finally {
      removeFault();
    }
    // Once Cloudflare answers again, the next pass finishes the job.
    const next = await reconciler(b).reconcile();
    expect(removedIds(next)).toEqual([o.cfTunnelId, o.dnsRecordId].sort());
  });
});

describe('ownership', () => {
  it('never touches foreign tunnels or records, by name, by target, by domain or by type', async () => {
    // TUNNEL_DOMAIN is a subdomain of the zone, so the zone has names outside it.
    const domain = `dev.${TEST_DOMAIN}`;
    const b = await broker({ env: { TUNNEL_DOMAIN: domain } });
    const up = upstream(b);
    const ours = await orphan(b);

    const noPrefix = await up.tunnel(`other-${randomUUID()}`);
    const notUuid = await up.tunnel(`${PREFIX}not-a-row-id`);
    const upperUuid = await up.tunnel(`${PREFIX}${randomUUID().toUpperCase()}`);
    const uuidPlus = await up.tunnel(`${PREFIX}${randomUUID()}-x`);
    const foreignTargets = [
      // Under our domain, pointing at a tunnel that is not ours (no prefix), or one not under our prefix at all.
      await up.cname(`${label()}.${domain}`, target(noPrefix)),
      await up.cname(`${label()}.${domain}`, target(notUuid)),
      await up.cname(`${label()}.${domain}`, target(randomUUID())),
    ];
    // Pointing at our orphan, but outside TUNNEL_DOMAIN: not the broker's name to remove.
    const outside = await up.cname(`${label()}.${TEST_DOMAIN}`, target(ours.cfTunnelId));
    const notCname = await up.txt(`${label()}.${domain}`);
    const notTunnel = await up.cname(`${label()}.${domain}`, 'example.com');

    const tunnelsBefore = liveTunnelIds(b);
    const report = await reconciler(b).reconcile();

    expect(removedIds(report)).toEqual([ours.cfTunnelId, ours.dnsRecordId].sort());
    for (const id of [notUuid, upperUuid, uuidPlus]) expect(skippedAs(report, id)).toBe('name_not_ours');
    for (const id of foreignTargets) expect(skippedAs(report, id)).toBe('foreign_tunnel');
    tunnelsBefore.delete(ours.cfTunnelId);
    expect(liveTunnelIds(b)).toEqual(tunnelsBefore);
    expect(recordIds(b)).toEqual(new Set([...foreignTargets, outside, notCname, notTunnel]));
    for (const id of [noPrefix, notUuid, upperUuid, uuidPlus]) {
      expect(deletesOf(b, 'tunnel.delete', id)).toEqual([]);
      expect(deletesOf(b, 'tunnel.connections.delete', id)).toEqual([]);
    }
    expect(b.emulator.requests.filter((r) => r.endpoint === 'dns.delete').map((r) => r.path)).toEqual([expect.stringContaining(ours.dnsRecordId!)]);
  });
});

describe("the broker's mark on a DNS record", () => {
  const mark = (rowId: string, prefix = PREFIX) => `tunnel-broker ${prefix}${rowId}`;

  it('removes a record it marked for a row that ended or is gone, pointing at a tunnel that no longer exists, which frees the slug; look-alike marks stay', async () => {
    const b = await broker();
    // Two creates whose records outlived their tunnels, and that nothing in the database ties
    // to them any more: one row was deleted (retention), the other never recorded its upstream ids.
    const purged = await createViaApi(b);
    const unrecorded = await createViaApi(b);
    for (const t of [purged, unrecorded]) await upstream(b).deleteTunnel(t.cfTunnelId);
    await b.app.prisma.tunnel.delete({ where: { id: purged.row.id } });
    await b.app.prisma.tunnel.update({
      where: { id: unrecorded.row.id },
      data: { status: 'ended', endReason: 'create_failed', endedAt: new Date(), cfTunnelId: null, dnsRecordId: null },
    });
    // The slug is lost while the record stays: a create of it meets a record that is not its own.
    const retry = () => b.app.inject({ method: 'POST', url: '/v1/tunnels', headers: b.auth(purged.userId), payload: { port: 3000, requestedSlug: purged.row.slug } });
    expect((await retry()).statusCode).toBe(502);
    const lookAlikes = await Promise.all([
      mark('not-a-uuid'),
      mark(randomUUID(), 'other-'),
      mark(randomUUID().toUpperCase()),
    ].map((comment) => upstream(b).cname(`${label()}.${b.config.tunnels.domain}`, target(randomUUID()), comment)));

    const report = await reconciler(b).reconcile();

    expect(report.removed).toEqual(expect.arrayContaining([
      expect.objectContaining({ id: purged.dnsRecordId, reason: 'no_row', rowId: purged.row.id }),
      expect.objectContaining({ id: unrecorded.dnsRecordId, reason: 'row_ended', rowId: unrecorded.row.id }),
    ]));
    expect(report.removed).toHaveLength(2);
    for (const id of lookAlikes) expect(skippedAs(report, id)).toBe('foreign_tunnel');
    expect(recordIds(b)).toEqual(new Set(lookAlikes));
    const audit = await b.app.prisma.tunnelEvent.findMany({ where: { tunnelId: unrecorded.row.id, type: 'orphan_removed' } });
    expect(audit.map((e) => e.details)).toEqual([expect.objectContaining({ resource: 'dns_record', id: unrecorded.dnsRecordId })]);
    expect((await retry()).statusCode).toBe(201);
  });

  it('keeps a record marked for a live row, even one pointing at a tunnel it cannot otherwise prove is ours', async () => {
    const b = await broker();
    const live = await createViaApi(b);
    const marked = await upstream(b).cname(`${label()}.${b.config.tunnels.domain}`, target(randomUUID()), mark(live.row.id));

    const report = await reconciler(b).reconcile();

    expect(skippedAs(report, marked)).toBe('live_row');
    expect(report.removed).toEqual([]);
    expect(recordIds(b)).toEqual(new Set([live.dnsRecordId, marked]));
  });
});

describe('dry run', () => {
  it('removes nothing and reports what a real pass would remove and why the rest stays', async () => {
    const b = await broker();
    const live = await createViaApi(b);
    const o1 = await orphan(b);
    const o2 = await orphan(b, { withRecord: false });
    const foreign = await upstream(b).tunnel(`${PREFIX}someone-elses`);
    const foreignRecord = await upstream(b).cname(`${label()}.${TEST_DOMAIN}`, target(randomUUID()));
    const tunnelsBefore = liveTunnelIds(b);
    const recordsBefore = recordIds(b);
    const requestsBefore = b.emulator.requests.length;

    const dry = await reconciler(b).reconcile({ dryRun: true });

    expect(dry.dryRun).toBe(true);
    expect(dry.status).toBe('completed');
    expect(removedIds(dry)).toEqual([o1.cfTunnelId, o1.dnsRecordId, o2.cfTunnelId].sort());
    expect(dry.removed.every((e) => e.reason === 'no_row')).toBe(true);
    expect(skippedAs(dry, live.cfTunnelId)).toBe('live_row');
    expect(skippedAs(dry, live.dnsRecordId)).toBe('live_row');
    expect(skippedAs(dry, foreign)).toBe('name_not_ours');
    expect(skippedAs(dry, foreignRecord)).toBe('foreign_tunnel');
    expect(dry.listed).toEqual({ tunnels: 4, dnsRecords: 3, accessApps: 0, accessPolicies: 0 });
    // Nothing but lists was sent, and no lock taken.
    expect(b.emulator.requests.slice(requestsBefore).every((r) => r.method === 'GET')).toBe(true);
    expect(liveTunnelIds(b)).toEqual(tunnelsBefore);
    expect(recordIds(b)).toEqual(recordsBefore);
    expect(await b.redis.exists(LOCK_KEY)).toBe(0);

    // The real pass does exactly what the dry run announced.
    const real = await reconciler(b).reconcile();
    expect(removedIds(real)).toEqual(removedIds(dry));
  });
});

describe('pagination', () => {
  it('reads every page of both lists', async () => {
    const b = await broker();
    const PER_PAGE = 3;
    const orphans = [];
    for (let i = 0; i < 20; i++) orphans.push(await orphan(b, { withRecord: i % 2 === 0 }));
    const live = [await createViaApi(b), await createViaApi(b)];
    const listsBefore = { tunnels: b.emulator.count('tunnel.list'), dns: b.emulator.count('dns.list') };

    const report = await reconciler(b, { perPage: PER_PAGE }).reconcile();

    const expected = orphans.flatMap((o) => (o.dnsRecordId ? [o.cfTunnelId, o.dnsRecordId] : [o.cfTunnelId]));
    expect(removedIds(report)).toEqual(expected.sort());
    expect(report.listed).toEqual({ tunnels: 22, dnsRecords: 12, accessApps: 0, accessPolicies: 0 });
    // ceil(22 / 3) = 8 full or partial pages, then the empty one that ends the listing.
    expect(b.emulator.count('tunnel.list') - listsBefore.tunnels).toBe(9);
    expect(b.emulator.count('dns.list') - listsBefore.dns).toBe(5);
    expect(b.emulator.requests.some((r) => r.endpoint === 'tunnel.list' && r.path.includes('per_page=3') && r.path.includes('page=8'))).toBe(true);
    expect(liveTunnelIds(b)).toEqual(new Set(live.map((l) => l.cfTunnelId)));
    expect(recordIds(b)).toEqual(new Set(live.map((l) => l.dnsRecordId)));
  });
});

describe('limits', () => {
  it('removes at most maxDeletionsPerPass orphans and leaves the rest for the next pass', async () => {
    const b = await broker();
    const orphans = [];
    for (let i = 0; i < 5; i++) orphans.push(await orphan(b, { withRecord: false }));
    const r = reconciler(b, { maxDeletionsPerPass: 3 });

    const first = await r.reconcile();
    expect(first.removed).toHaveLength(3);
    expect(first.skipped.filter((e) => e.reason === 'pass_limit')).toHaveLength(2);
    const second = await r.reconcile();
    expect(second.removed).toHaveLength(2);
    expect([...removedIds(first), ...removedIds(second)].sort()).toEqual(orphans.map((o) => o.cfTunnelId).sort());
  });
});

describe('races', () => {
  it('re-checks the database just before each delete: a row that appears meanwhile keeps its tunnel', async () => {
    const b = await broker();
    const a = await orphan(b, { withRecord: false });
    const c = await orphan(b, { withRecord: false });
    // Hold the first deletion upstream while a create writes a row for the other orphan.
    b.emulator.injectFault({ endpoint: 'tunnel.connections.delete', kind: 'latency', latencyMs: 300, times: 1 });
    const pass = reconciler(b, { concurrency: 1 }).reconcile();
    const first = await b.emulator.waitForRequest({ endpoint: 'tunnel.connections.delete' });
    const [deleting, appearing] = first.path.includes(a.cfTunnelId) ? [a, c] : [c, a];
    await b.app.prisma.tunnel.create({
      data: { id: appearing.rowId, ownerId: 'late', slug: appearing.hostname.split('.')[0]!, hostname: appearing.hostname, port: 3000, status: 'creating' },
    });

    const report = await pass;

    expect(removedIds(report)).toEqual([deleting.cfTunnelId]);
    expect(skippedAs(report, appearing.cfTunnelId)).toBe('live_row_on_recheck');
    expect(liveTunnelIds(b).has(appearing.cfTunnelId)).toBe(true);
    expect(deletesOf(b, 'tunnel.connections.delete', appearing.cfTunnelId)).toEqual([]);
  });

  it('two brokers reconciling at once delete each orphan upstream exactly once', async () => {
    const a = await broker();
    const b = await broker({ shared: { db: a.db, emulator: a.emulator, redisKeyPrefix: a.config.redis.keyPrefix } });
    const orphans = [];
    for (let i = 0; i < 6; i++) orphans.push(await orphan(a));
    // Slow enough that the passes overlap completely.
    a.emulator.setLatency(20);

    const reports = await Promise.all([reconciler(a).reconcile(), reconciler(b).reconcile()]);

    expect(reports.map((r) => r.status).sort()).toEqual(['completed', 'locked']);
    for (const o of orphans) {
      expect(deletesOf(a, 'tunnel.delete', o.cfTunnelId)).toHaveLength(1);
      expect(deletesOf(a, 'dns.delete', o.dnsRecordId!)).toHaveLength(1);
    }
    expect(a.emulator.liveTunnels()).toEqual([]);
    expect(a.emulator.dnsRecords()).toEqual([]);
    // Released: the next pass anywhere may run.
    expect(await a.redis.exists(LOCK_KEY)).toBe(0);
    expect((await reconciler(b).reconcile()).status).toBe('completed');
  });

  it('does nothing while another holder has the lock, and never releases a lock it does not hold', async () => {
    const b = await broker();
    const o = await orphan(b, { withRecord: false });
    await b.redis.set(LOCK_KEY, 'someone-else', 'PX', 60_000);

    const report = await reconciler(b).reconcile();

    expect(report.status).toBe('locked');
    expect(report.removed).toEqual([]);
    expect(b.emulator.count('tunnel.list')).toBe(0);
    expect(await b.redis.get(LOCK_KEY)).toBe('someone-else');
    expect(liveTunnelIds(b).has(o.cfTunnelId)).toBe(true);
  });

  it('renews its lease during a long pass, and stops deleting once the lock is lost', async () => {
    const b = await broker();
    for (let i = 0; i < 6; i++) await orphan(b, { withRecord: false });
    const LEASE_MS = 500;
    // Each tunnel deletion takes 350 ms: the pass outlives several leases.
    b.emulator.injectFault({ endpoint: 'tunnel.delete', kind: 'latency', latencyMs: 350 });
    const pass = reconciler(b, { concurrency: 1, lockLeaseMs: LEASE_MS }).reconcile();

    // After the third deletion (over two leases in), the lock is still held: it was renewed.
    await eventually(() => b.emulator.requests.filter((r) => r.endpoint === 'tunnel.delete' && r.status !== 0).length >= 3, { timeoutMs: 5_000 });
    const token = await b.redis.get(LOCK_KEY);
    expect(token).toBeTruthy();
    expect(await b.redis.pttl(LOCK_KEY)).toBeGreaterThan(0);
    // Another instance takes over (as if this one had stalled past its lease).
    await b.redis.set(LOCK_KEY, 'usurper', 'PX', 60_000);

    const report = await pass;
    expect(report.status).toBe('interrupted');
    expect(report.interruptedBy).toBe('lock_lost');
    expect(report.removed.length).toBeGreaterThanOrEqual(3);
    expect(report.removed.length).toBeLessThan(6);
    expect(report.skipped.filter((e) => e.reason === 'interrupted')).toHaveLength(6 - report.removed.length);
    expect(b.emulator.count('tunnel.delete')).toBe(report.removed.length);
    // The compare-and-delete left the new holder's lock alone.
    expect(await b.redis.get(LOCK_KEY)).toBe('usurper');
  });
});

describe('after reconciliation', () => {
  it('upstream holds exactly the tunnels and DNS records the database calls live', async () => {
    const b = await broker();
    const live = [await createViaApi(b), await createViaApi(b), await createViaApi(b)];
    const deleted = await createViaApi(b);
    expect((await b.app.inject({ method: 'DELETE', url: `/v1/tunnels/${deleted.row.id}`, headers: b.auth(deleted.userId) })).statusCode).toBe(204);
    const endedInDb = await createViaApi(b);
    await b.app.prisma.tunnel.update({ where: { id: endedInDb.row.id }, data: { status: 'ended', endReason: 'heartbeat_lapsed', endedAt: new Date() } });
    await orphan(b);
    await orphan(b, { withRecord: false });
    // A record of an ended row whose tunnel is already gone upstream.
    await upstream(b).cname(`${label()}.${b.config.tunnels.domain}`, target(deleted.cfTunnelId));

    const report = await reconciler(b).reconcile();
    expect(report.failed).toEqual([]);

    const rows = await b.app.prisma.tunnel.findMany({ where: { status: { not: 'ended' } } });
    expect(rows.map((r) => r.id).sort()).toEqual(live.map((l) => l.row.id).sort());
    expect(liveTunnelIds(b)).toEqual(new Set(rows.map((r) => r.cfTunnelId)));
    const tunnelRecords = b.emulator.dnsRecords().filter((r) => r.type === 'CNAME' && r.content.endsWith('.cfargotunnel.com'));
    expect(new Set(tunnelRecords.map((r) => r.id))).toEqual(new Set(rows.map((r) => r.dnsRecordId)));
  });
});

describe('Reconciler object and wiring', () => {
  it('start and stop are idempotent, passes do not overlap, and stop waits for the running pass', async () => {
    const b = await broker();
    for (let i = 0; i < 4; i++) await orphan(b, { withRecord: false });
    const r = reconciler(b, { concurrency: 1 });
    r.start();
    r.start();
    expect(r.started).toBe(true);
    b.emulator.injectFault({ endpoint: 'tunnel.delete', kind: 'latency', latencyMs: 200, times: 1 });
    const one = r.reconcile();
    expect(r.reconcile()).toBe(one);
    let settled = false;
    void one.then(() => {
      settled = true;
    });
    await b.emulator.waitForRequest({ endpoint: 'tunnel.delete' });
    await Promise.all([r.stop(), r.stop()]);
    expect(settled).toBe(true);
    expect(r.started).toBe(false);
    const report = await one;
    expect(report.status).toBe('interrupted');
    expect(report.interruptedBy).toBe('stopping');
    expect(report.removed).toHaveLength(1);
    expect(report.skipped.filter((e) => e.reason === 'interrupted')).toHaveLength(3);
    // A manual pass after stop() runs in full.
    expect((await r.reconcile()).removed).toHaveLength(3);
  });

  it('a dry run asked for during a real pass runs after it, not instead of it', async () => {
    const b = await broker();
    await orphan(b, { withRecord: false });
    const r = reconciler(b);
    const real = r.reconcile();
    const dry = r.reconcile({ dryRun: true });
    expect(dry).not.toBe(real);
    const [realReport, dryReport] = await Promise.all([real, dry]);
    expect(realReport.removed).toHaveLength(1);
    expect(dryReport.removed).toEqual([]);
  });

  it('the app runs it on RECONCILE_INTERVAL_SECONDS with RECONCILE_GRACE_SECONDS, and closing the app stops it', async () => {
    const b = await broker({ env: { RECONCILE_INTERVAL_SECONDS: '1', RECONCILE_GRACE_SECONDS: '1' }, startReconciler: true });
    const r = b.app.reconciler!;
    expect(r.started).toBe(true);
    expect(b.app.reaper!.started).toBe(false);
    const created = Date.now();
    const o = await orphan(b);
    await eventually(() => !liveTunnelIds(b).has(o.cfTunnelId) && !recordIds(b).has(o.dnsRecordId!), { timeoutMs: 8_000, intervalMs: 100, what: 'the orphan to be reconciled away' });
    // Not before it was a grace period old.
    expect(Date.now() - created).toBeGreaterThanOrEqual(1_000);
    expect(b.logs.events('reconcile.deleted').map((l) => l.id)).toEqual(expect.arrayContaining([o.cfTunnelId, o.dnsRecordId]));
    brokers.splice(brokers.indexOf(b), 1);
    await b.close();
    expect(r.started).toBe(false);
  });

  it('runs only where the reaper runs', async () => {
    const api = await broker({ env: { BROKER_ROLE: 'api' } });
    expect(api.app.reconciler).toBeNull();
    const reaper = await broker({ env: { BROKER_ROLE: 'reaper' }, startReaper: true });
    expect(reaper.app.reconciler?.started).toBe(true);
  });
});
