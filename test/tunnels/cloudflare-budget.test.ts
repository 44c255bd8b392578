/**
 * The Cloudflare request budget as the broker uses it: every upstream request passes
 * it, creates fail fast when it is spent, deletions wait their turn. Each test's broker
 * has its own budget (its own Redis prefix); "another broker" spending it is a second
 * RequestBudget on the same key space.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_REQUEST_BUDGET_KEY, RequestBudget } from '../../src/cloudflare/request-budget.js';
import { eventually, startTestBroker, type TestBroker, deadlineOf } from '../helpers/broker.js';

const brokers: TestBroker[] = [];
afterEach(async () => {
  await Promise.all(brokers.splice(0).map((b) => b.close()));
});

async function broker(env: Record<string, string>): Promise<TestBroker> {
  const b = await startTestBroker({ env });
  brokers.push(b);
  return b;
}

/** The same budget, as another broker instance sees it. */
function otherInstance(b: TestBroker): RequestBudget {
  return new RequestBudget(b.redis, b.config.cloudflare.budget);
}

/** Spends what is left of the budget, as another broker would. */
async function spendRest(b: TestBroker): Promise<void> {
  const budget = otherInstance(b);
  for (let i = 0; i < b.config.cloudflare.budget.requests; i++) if (!(await budget.tryAcquire()).ok) return;
}

async function create(b: TestBroker, userId: string) {
  return b.app.inject({ method: 'POST', url: '/v1/tunnels', headers: b.auth(userId), payload: { port: 3000 } });
}

function upstream(b: TestBroker) {
  return { tunnels: b.emulator.liveTunnels().length, dns: b.emulator.dnsRecords().length };
}

describe('the Cloudflare request budget', () => {
  it('counts every request the SDK sends: creates, our retries, the SDK\'s retries, lookups and list pages', async () => {
    const b = await broker({ CLOUDFLARE_BUDGET_REQUESTS: '1000', CLOUDFLARE_MAX_RETRIES: '2' });
    const user = `user-${randomUUID()}`;
    // The SDK retries the PUT; our loop retries the create and adopts (list + token).
    const removePut = b.emulator.injectFault({ endpoint: 'tunnel.configuration.put', kind: 'error5xx', status: 503, times: 1 });
    const removeCreate = b.emulator.injectFault({ endpoint: 'tunnel.create', kind: 'lostResponse', times: 1 });
    const first = await create(b, user);
    removePut();
    removeCreate();
    expect(first.statusCode).toBe(201);
    // A DNS response lost on every attempt: the rollback lists records to find the one made.
    const removeDns = b.emulator.injectFault({ endpoint: 'dns.create', kind: 'lostResponse' });
    const second = await create(b, user);
    removeDns();
    expect(second.statusCode).toBe(503);
    const del = await b.app.inject({ method: 'DELETE', url: `/v1/tunnels/${first.json().tunnelId}`, headers: b.auth(user) });
    expect(del.statusCode).toBe(204);

    const sent = b.emulator.requests.length;
    expect(sent).toBeGreaterThan(12);
    expect(b.emulator.count('tunnel.configuration.put')).toBe(3);
    expect(b.config.cloudflare.budget.requests - (await otherInstance(b).remaining())).toBe(sent);
  });

  it('a create takes the budget of its three upstream calls in one Redis call, and each call counts', async () => {
    const b = await broker({ CLOUDFLARE_BUDGET_REQUESTS: '1000' });
    const before = new Set(await b.redis.zrange(DEFAULT_REQUEST_BUDGET_KEY, 0, -1));
    const calls = b.emulator.requests.length;
    const res = await create(b, `user-${randomUUID()}`);
    expect(res.statusCode).toBe(201);
    expect(b.emulator.requests.length - calls).toBe(3);
    const added = (await b.redis.zrange(DEFAULT_REQUEST_BUDGET_KEY, 0, -1)).filter((m) => !before.has(m));
    // One acquisition: its member and two companions, all at one instant.
    const first = added.find((m) => !m.includes('#'));
    expect(added.sort()).toEqual([first, `${first}#2`, `${first}#3`].sort());
    expect(new Set(await Promise.all(added.map((m) => b.redis.zscore(DEFAULT_REQUEST_BUDGET_KEY, m)))).size).toBe(1);
  });

  it('a create with the budget spent answers 503 + Retry-After at once and sends nothing upstream', async () => {
    const b = await broker({ CLOUDFLARE_BUDGET_REQUESTS: '5', CLOUDFLARE_BUDGET_WINDOW_SECONDS: '60', MAX_TUNNELS_PER_USER: '1' });
    await spendRest(b);
    const user = `user-${randomUUID()}`;
    const before = b.emulator.requests.length;
    const started = Date.now();
    const res = await create(b, user);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(res.statusCode).toBe(503);
    expect(res.json().code).toBe('UPSTREAM_UNAVAILABLE');
    const retryAfter = Number(res.headers['retry-after']);
    expect(retryAfter).toBeGreaterThanOrEqual(55);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(b.emulator.requests.length).toBe(before);

    // Nothing was made, so nothing is held: the row is ended, the quota and slug free.
    const [row] = await b.app.prisma.tunnel.findMany({ where: { ownerId: user } });
    expect(row).toMatchObject({ status: 'ended', endReason: 'create_failed' });
    expect(await deadlineOf(b.redis, row!.id)).toBeNull();
    expect(b.logs.events('upstream.failure').some((l) => String(l.msg).includes('budget is spent'))).toBe(true);
  });

  it('a create does not wait for the budget even when a slot frees within a second', async () => {
    const b = await broker({ CLOUDFLARE_BUDGET_REQUESTS: '5', CLOUDFLARE_BUDGET_WINDOW_SECONDS: '1' });
    await spendRest(b);
    const started = Date.now();
    const res = await create(b, `user-${randomUUID()}`);
    const elapsed = Date.now() - started;
    expect(res.statusCode).toBe(503);
    expect(res.headers['retry-after']).toBe('1');
    expect(elapsed).toBeLessThan(400);
    expect(b.emulator.requests.length).toBe(0);
  });

  it('creates leave a reserve that deletions still use', async () => {
    // 30 per window: creates may use 27, the last 3 are for teardowns.
    const b = await broker({ CLOUDFLARE_BUDGET_REQUESTS: '30', CLOUDFLARE_BUDGET_WINDOW_SECONDS: '60' });
    const user = `user-${randomUUID()}`;
    const made = await create(b, user);
    expect(made.statusCode).toBe(201);
    const other = otherInstance(b);
    for (let i = 0; i < 24; i++) expect((await other.tryAcquire()).ok).toBe(true);
    expect(await other.remaining()).toBe(3);

    const refused = await create(b, user);
    expect(refused.statusCode).toBe(503);
    const del = await b.app.inject({ method: 'DELETE', url: `/v1/tunnels/${made.json().tunnelId}`, headers: b.auth(user) });
    expect(del.statusCode).toBe(204);
    expect(b.emulator.liveTunnels()).toHaveLength(0);
    expect(await other.remaining()).toBe(0);
  });

  it('a deletion with the budget spent waits until the window frees, then completes', async () => {
    // The wait (about 2 s) is longer than the per-request timeout, with no SDK retries
    // to hide a request that timed out while it waited.
    const b = await broker({ CLOUDFLARE_BUDGET_REQUESTS: '6', CLOUDFLARE_BUDGET_WINDOW_SECONDS: '2', CLOUDFLARE_TIMEOUT_MS: '500', CLOUDFLARE_MAX_RETRIES: '0' });
    const user = `user-${randomUUID()}`;
    const made = await create(b, user);
    expect(made.statusCode).toBe(201);
    await spendRest(b);
    const refusal = await otherInstance(b).tryAcquire();
    expect(refusal.ok).toBe(false);
    const turnInMs = (refusal as { retryAfterMs: number }).retryAfterMs;
    expect(turnInMs).toBeGreaterThan(500);

    const started = Date.now();
    const deleting = b.app.inject({ method: 'DELETE', url: `/v1/tunnels/${made.json().tunnelId}`, headers: b.auth(user) });
    // Until its turn, nothing is sent.
    await sleep(turnInMs - 300);
    expect(b.emulator.count('dns.delete') + b.emulator.count('tunnel.delete') + b.emulator.count('tunnel.connections.delete')).toBe(0);
    const del = await deleting;
    expect(del.statusCode).toBe(204);
    expect(Date.now() - started).toBeGreaterThanOrEqual(turnInMs - 50);
    expect(upstream(b)).toEqual({ tunnels: 0, dns: 0 });
    expect(await b.app.prisma.tunnel.findUniqueOrThrow({ where: { id: made.json().tunnelId } })).toMatchObject({ status: 'ended' });
  });

  it('a deletion whose turn is past the wait bound fails as transient at once and stays ending for the reaper', async () => {
    const b = await broker({ CLOUDFLARE_BUDGET_REQUESTS: '3', CLOUDFLARE_BUDGET_WINDOW_SECONDS: '60' });
    const user = `user-${randomUUID()}`;
    const made = await create(b, user);
    expect(made.statusCode).toBe(201);
    const before = b.emulator.requests.length;
    const started = Date.now();
    const del = await b.app.inject({ method: 'DELETE', url: `/v1/tunnels/${made.json().tunnelId}`, headers: b.auth(user) });
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(del.statusCode).toBe(503);
    expect(Number(del.headers['retry-after'])).toBeGreaterThanOrEqual(55);
    expect(b.emulator.requests.length).toBe(before);
    const id = made.json().tunnelId as string;
    expect(await b.app.prisma.tunnel.findUniqueOrThrow({ where: { id } })).toMatchObject({ status: 'ending' });
    // The reaper comes back once the budget has room again, not before.
    const due = Number(await deadlineOf(b.redis, id));
    expect(due - Date.now()).toBeGreaterThan(50_000);
  });

  it('shutting down cuts a wait for the budget short: the deletion fails as transient and stays ending', async () => {
    const b = await broker({ CLOUDFLARE_BUDGET_REQUESTS: '3', CLOUDFLARE_BUDGET_WINDOW_SECONDS: '10' });
    const user = `user-${randomUUID()}`;
    const made = await create(b, user);
    expect(made.statusCode).toBe(201);
    const deleting = b.app.inject({ method: 'DELETE', url: `/v1/tunnels/${made.json().tunnelId}`, headers: b.auth(user) });
    // It is waiting for its turn (about 10 s away) when the app closes.
    await eventually(async () => (await b.app.prisma.tunnel.findUniqueOrThrow({ where: { id: made.json().tunnelId } })).status === 'ending', { what: 'the delete to start' });
    await sleep(200);
    const started = Date.now();
    await b.app.close();
    const del = await deleting;
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(del.statusCode).toBe(503);
    expect(b.emulator.liveTunnels()).toHaveLength(1);
  });

  it('a create whose budget runs out half-way answers 503, and its rollback waits its turn and removes everything', async () => {
    const b = await broker({ CLOUDFLARE_BUDGET_REQUESTS: '3', CLOUDFLARE_BUDGET_WINDOW_SECONDS: '2', MAX_TUNNELS_PER_USER: '1' });
    const other = otherInstance(b);
    // One slot left: the tunnel create gets it, the DNS record and the ingress do not.
    expect((await other.tryAcquire()).ok).toBe(true);
    expect((await other.tryAcquire()).ok).toBe(true);
    const user = `user-${randomUUID()}`;
    const res = await create(b, user);
    expect(res.statusCode).toBe(503);
    expect(res.json().code).toBe('UPSTREAM_UNAVAILABLE');
    expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(b.emulator.count('tunnel.create')).toBe(1);
    expect(b.emulator.count('dns.create')).toBe(0);
    expect(upstream(b)).toEqual({ tunnels: 0, dns: 0 });
    const [row] = await b.app.prisma.tunnel.findMany({ where: { ownerId: user } });
    expect(row).toMatchObject({ status: 'ended', endReason: 'create_failed' });
  });
});
