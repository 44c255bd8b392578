import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { UncoveredAccountsError } from '../../src/cloudflare/account-coverage.js';
import type { CloudflareEmulator } from '../../src/cloudflare/emulator/emulator.js';
import { createCloudflareClient } from '../../src/cloudflare/cloudflare-client.js';
import { accountConfig } from '../../src/cloudflare/cloudflare-accounts.js';
import { RequestBudget } from '../../src/cloudflare/request-budget.js';
import { AccountReconcilers } from '../../src/reconcile/account-reconcilers.js';
import { accountDomain, type TestBroker, useTestBroker } from '../helpers/broker.js';

const user = () => `user-${randomUUID()}`;

function create(b: TestBroker, userId: string, payload: Record<string, unknown> = { port: 3000 }) {
  return b.app.inject({ method: 'POST', url: '/v1/tunnels', headers: { ...b.auth(userId), 'content-type': 'application/json' }, payload: JSON.stringify(payload) });
}

function remove(b: TestBroker, userId: string, tunnelId: string) {
  return b.app.inject({ method: 'DELETE', url: `/v1/tunnels/${tunnelId}`, headers: b.auth(userId) });
}

/** Which emulator (by index) holds the tunnel `cfTunnelId` and the CNAME `hostname`, and that each is in exactly one. */
function whereIs(b: TestBroker, hostname: string, cfTunnelId: string): { tunnel: number[]; record: number[] } {
  const has = (pred: (e: CloudflareEmulator) => boolean) => b.emulators.flatMap((e, i) => (pred(e) ? [i] : []));
  return {
    tunnel: has((e) => e.liveTunnels().some((t) => t.id === cfTunnelId)),
    record: has((e) => e.dnsRecords().some((r) => r.name === hostname && r.content === `${cfTunnelId}.cfargotunnel.com`)),
  };
}

async function createOk(b: TestBroker, userId = user(), payload?: Record<string, unknown>) {
  const res = await create(b, userId, payload);
  expect(res.statusCode, res.body).toBe(201);
  const body = res.json<{ tunnelId: string; hostname: string }>();
  const row = await b.app.prisma.tunnel.findUniqueOrThrow({ where: { id: body.tunnelId } });
  return { userId, body, row };
}

describe('two Cloudflare accounts, two tunnels each', () => {
  const broker = useTestBroker({ accounts: [{ name: 'alpha', maxTunnels: 2 }, { name: 'beta', maxTunnels: 2 }] });

  it('places each create in the least loaded account, its tunnel and CNAME both in that account and nowhere else; full means 503 with Retry-After', async () => {
    const made = [];
    for (let i = 0; i < 4; i++) made.push(await createOk(broker));
    expect(made.map((m) => m.row.cfAccountId)).toEqual([0, 1, 0, 1].map((i) => broker.emulators[i]!.accountId));
    for (const { body, row } of made) {
      const index = broker.emulators.findIndex((e) => e.accountId === row.cfAccountId);
      expect(body.hostname).toBe(`${row.slug}.${accountDomain(['alpha', 'beta'][index]!)}`);
      expect(whereIs(broker, body.hostname, row.cfTunnelId!)).toEqual({ tunnel: [index], record: [index] });
    }

    const creates = broker.emulators.map((e) => e.count('tunnel.create'));
    const full = await create(broker, user());
    expect(full.statusCode).toBe(503);
    expect(full.json()).toMatchObject({ code: 'TUNNEL_CAPACITY_EXHAUSTED' });
    // TUNNEL_TTL_SECONDS + REAPER_INTERVAL_SECONDS (defaults 60 + 5): see TunnelService.capacityRetryAfterSec.
    expect(full.headers['retry-after']).toBe('65');
    // Known before Cloudflare refuses: nothing was asked of either account.
    expect(broker.emulators.map((e) => e.count('tunnel.create'))).toEqual(creates);

    // A DELETE tears down in the tunnel's own account, and frees a slot there.
    const inBeta = made[1]!;
    const alphaDeletes = broker.emulators[0]!.count('tunnel.delete');
    expect((await remove(broker, inBeta.userId, inBeta.body.tunnelId)).statusCode).toBe(204);
    expect(whereIs(broker, inBeta.body.hostname, inBeta.row.cfTunnelId!)).toEqual({ tunnel: [], record: [] });
    expect(broker.emulators[0]!.count('tunnel.delete')).toBe(alphaDeletes);
    const again = await createOk(broker);
    expect(again.row.cfAccountId).toBe(broker.emulators[1]!.accountId);

    // The reaper ends a lapsed tunnel through its own account too.
    const lapsed = made[0]!;
    expect(await broker.app.tunnels.endDue(lapsed.body.tunnelId)).toBe('ended');
    expect(whereIs(broker, lapsed.body.hostname, lapsed.row.cfTunnelId!)).toEqual({ tunnel: [], record: [] });

    for (const m of [made[2]!, made[3]!, again]) expect((await remove(broker, m.userId, m.body.tunnelId)).statusCode).toBe(204);
    expect(broker.emulators.map((e) => e.liveTunnels().length)).toEqual([0, 0]);
  });

  it("makes a tunnel's own Access objects in its account, at create and on PATCH, and removes them there", async () => {
    // Alpha and beta both empty: the next create goes to alpha, the one after to beta.
    const first = await createOk(broker);
    const inBeta = await createOk(broker, user(), { port: 2, access: { mode: 'emails', emails: ['guest@partner.example'] } });
    expect(inBeta.row.cfAccountId).toBe(broker.emulators[1]!.accountId);
    const name = `${broker.config.cloudflare.tunnelNamePrefix}${inBeta.body.tunnelId}`;
    const apps = () => broker.emulators.map((e) => e.accessApps().filter((a) => a.name === name).length);
    expect(apps()).toEqual([0, 1]);
    const patched = await broker.app.inject({ method: 'PATCH', url: `/v1/tunnels/${inBeta.body.tunnelId}`, headers: broker.auth(inBeta.userId), payload: { access: { mode: 'public' } } });
    expect(patched.statusCode, patched.body).toBe(200);
    expect(apps()).toEqual([0, 0]);
    expect(broker.emulators[1]!.audience(inBeta.body.hostname)).toMatchObject({ gate: 'none' });
    const again = await broker.app.inject({ method: 'PATCH', url: `/v1/tunnels/${inBeta.body.tunnelId}`, headers: broker.auth(inBeta.userId), payload: { access: { mode: 'emails', emails: ['x@partner.example'] } } });
    expect(again.statusCode, again.body).toBe(200);
    expect(apps()).toEqual([0, 1]);
    for (const m of [first, inBeta]) expect((await remove(broker, m.userId, m.body.tunnelId)).statusCode).toBe(204);
    expect(apps()).toEqual([0, 0]);
  });

  it('keeps a slug unique across accounts: a slug live in one account is refused even when the other has room', async () => {
    const slug = `s-${randomUUID().slice(0, 8)}`;
    const first = await createOk(broker, user(), { port: 1, requestedSlug: slug });
    const res = await create(broker, user(), { port: 1, requestedSlug: slug });
    expect(res.statusCode).toBe(409);
    expect(res.json()).toMatchObject({ code: 'TUNNEL_SLUG_CONFLICT' });
    expect((await remove(broker, first.userId, first.body.tunnelId)).statusCode).toBe(204);
  });

  it("gives each account its own request budget: one account's spent budget does not stop another's teardowns, and creates go elsewhere", async () => {
    const alpha = await createOk(broker);
    const beta = await createOk(broker);
    expect([alpha.row.cfAccountId, beta.row.cfAccountId]).toEqual(broker.emulators.map((e) => e.accountId));
    // Spend alpha's budget (the primary keeps the single-account key).
    const alphaBudget = new RequestBudget(broker.redis, { ...broker.config.cloudflare.budget, key: 'cf-budget' });
    for (let i = 0; i < broker.config.cloudflare.budget.requests; i++) if (!(await alphaBudget.tryAcquire()).ok) break;
    expect(await alphaBudget.remaining()).toBe(0);

    const betaDeletes = broker.emulators[1]!.count('tunnel.delete');
    expect((await remove(broker, beta.userId, beta.body.tunnelId)).statusCode).toBe(204);
    expect(broker.emulators[1]!.count('tunnel.delete')).toBe(betaDeletes + 1);
    // Alpha has 1 live of 2 and beta 0 of 2: beta is the less loaded, and its budget is whole.
    const next = await createOk(broker);
    expect(next.row.cfAccountId).toBe(broker.emulators[1]!.accountId);
    // Now alpha (1 of 2) is the less loaded, but its budget is spent: the create goes to beta
    // rather than fail on alpha's budget.
    const alphaCreates = broker.emulators[0]!.count('tunnel.create');
    const avoided = await createOk(broker);
    expect(avoided.row.cfAccountId).toBe(broker.emulators[1]!.accountId);
    expect(broker.emulators[0]!.count('tunnel.create')).toBe(alphaCreates);

    await broker.redis.del('cf-budget');
    for (const m of [alpha, next, avoided]) expect((await remove(broker, m.userId, m.body.tunnelId)).statusCode).toBe(204);
  });

  it("sends new tunnels to the other account while Cloudflare refuses one account's token (429), for as long as its Retry-After", async () => {
    // Both accounts are empty: alpha, first listed, is where the next create goes.
    const refusedBy = broker.emulators[0]!.injectFault({ kind: 'rateLimit', endpoint: 'tunnel.create', retryAfterSec: 30, times: 1 });
    const refused = await create(broker, user());
    refusedBy();
    expect(refused.statusCode).toBe(503);
    expect(refused.headers['retry-after']).toBe('30');
    const alphaBudget = new RequestBudget(broker.redis, { ...broker.config.cloudflare.budget, key: 'cf-budget' });
    expect(await alphaBudget.refusedForMs()).toBeGreaterThan(25_000);
    expect(await alphaBudget.refusedForMs()).toBeLessThanOrEqual(30_000);

    // Alpha is still the less loaded (its refused create ended), but its token was refused.
    const alphaCreates = broker.emulators[0]!.count('tunnel.create');
    const elsewhere = await createOk(broker);
    expect(elsewhere.row.cfAccountId).toBe(broker.emulators[1]!.accountId);
    expect(broker.emulators[0]!.count('tunnel.create')).toBe(alphaCreates);

    // Once the refusal has passed (here: forgotten), alpha takes creates again.
    await broker.redis.del('cf-budget:refused');
    const back = await createOk(broker);
    expect(back.row.cfAccountId).toBe(broker.emulators[0]!.accountId);
    for (const m of [elsewhere, back]) expect((await remove(broker, m.userId, m.body.tunnelId)).statusCode).toBe(204);
  });

  it('reconciles every account: an orphan in the second account is removed with its own token', async () => {
    const beta = broker.app.cloudflareAccounts.all[1]!;
    const client = createCloudflareClient(accountConfig(broker.config.cloudflare, beta.account));
    const orphan = await client.zeroTrust.tunnels.cloudflared.create({ account_id: beta.account.accountId, name: `${broker.config.cloudflare.tunnelNamePrefix}${randomUUID()}`, config_src: 'cloudflare' });
    const reconcilers = new AccountReconcilers({
      prisma: broker.app.prisma,
      redis: broker.app.redis,
      accounts: broker.app.cloudflareAccounts,
      logger: pino({ level: 'silent' }),
      tunnelNamePrefix: broker.config.cloudflare.tunnelNamePrefix,
      graceMs: 0,
    });
    const report = await reconcilers.reconcile();
    expect(report.removed.map((r) => r.id)).toEqual([orphan.id]);
    expect(report.accounts?.map((a) => a.account)).toEqual(['alpha', 'beta']);
    expect(broker.emulators[1]!.liveTunnels().some((t) => t.id === orphan.id)).toBe(false);
  });

  it('reports tunnels, remaining capacity and budget per account, by name and never by token', async () => {
    const made = await createOk(broker);
    const res = await broker.app.inject({ method: 'GET', url: '/metrics' });
    const text = res.body;
    const value = (metric: string, account: string) => Number(new RegExp(`^tunnel_broker_${metric}\\{account="${account}"\\} (\\S+)$`, 'm').exec(text)?.[1]);
    expect([value('cloudflare_account_tunnels', 'alpha'), value('cloudflare_account_tunnels', 'beta')]).toEqual([1, 0]);
    expect([value('cloudflare_account_capacity_remaining', 'alpha'), value('cloudflare_account_capacity_remaining', 'beta')]).toEqual([1, 2]);
    expect(value('cloudflare_account_capacity', 'beta')).toBe(2);
    expect(value('cloudflare_account_budget_remaining', 'beta')).toBeGreaterThan(0);
    // Nor in any log line the broker wrote through every test above (debug level).
    for (const e of broker.emulators) expect(text + broker.logs.raw).not.toContain(e.apiToken);
    expect((await remove(broker, made.userId, made.body.tunnelId)).statusCode).toBe(204);
  });

  it('refuses to boot without an account that still has live tunnels, naming it', async () => {
    const made = await createOk(broker);
    expect(made.row.cfAccountId).toBe(broker.emulators[0]!.accountId);
    const onlyBeta = { ...broker.config.cloudflare, accounts: [broker.config.cloudflare.accounts[1]!] };
    const app = await buildApp({ ...broker.config, cloudflare: onlyBeta }, { logger: pino({ level: 'silent' }), startReaper: false });
    const error = await app.ready().then(() => undefined, (e: unknown) => e);
    await app.close();
    expect(error).toBeInstanceOf(UncoveredAccountsError);
    expect(String((error as Error).message)).toContain(`1 in account ${broker.emulators[0]!.accountId}`);
    expect(String((error as Error).message)).not.toContain(broker.emulators[0]!.apiToken);
    expect((await remove(broker, made.userId, made.body.tunnelId)).statusCode).toBe(204);
  });
});
