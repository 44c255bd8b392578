import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUniqueViolation } from '../../src/db/database-error.js';
import type { PrismaClient } from '../../src/generated/prisma/client.js';
import { createPrismaClient } from '../../src/plugins/prisma.js';
import type { Placement } from '../../src/cloudflare/cloudflare-accounts.js';
import { AccountsFullError, type ActivationData, type NewTunnelRow, TunnelRows } from '../../src/tunnels/tunnel-rows.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

/** Long enough not to lapse during a test unless a test makes it. */
const LEASE_MS = 60_000;
/** One account with room for every row these tests make. */
const ONE_ACCOUNT: Placement = { accountIds: ['acc-main'], primaryAccountId: 'acc-main', capacities: [100_000], domains: ['tunnels.test'] };

let db: TestDatabase;
let prisma: PrismaClient;
let rows: TunnelRows;
beforeAll(async () => {
  db = await createTestDatabase();
  prisma = createPrismaClient(db.url);
  rows = new TunnelRows(prisma);
});
afterAll(async () => {
  await prisma?.$disconnect();
  await db?.drop();
});

function newRow(ownerId = `owner-${randomUUID()}`, slug = `s-${randomUUID().slice(0, 12)}`): NewTunnelRow {
  return { id: randomUUID(), ownerId, slug, port: 3000 };
}

/** What a create made upstream, as fresh ids. */
const made = (): ActivationData => ({ cfTunnelId: randomUUID(), dnsRecordId: randomUUID().replaceAll('-', ''), accessAppId: null, accessPolicyId: null });

const eventsOf = async (tunnelId: string) =>
  (await prisma.tunnelEvent.findMany({ where: { tunnelId }, orderBy: { id: 'asc' } })).map((e) => [e.type, e.actor, e.details]);

describe('TunnelRows.insertLive', () => {
  it('returns the row exactly as the Prisma query API reads it: every field, named and typed alike', async () => {
    const inserted = await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT);
    expect(inserted).toBeDefined();
    expect(inserted).toEqual(await prisma.tunnel.findUniqueOrThrow({ where: { id: inserted!.id } }));
    expect(inserted).toMatchObject({ status: 'creating', cfTunnelId: null, endReason: null, endedAt: null, createdAt: expect.any(Date) });
  });

  it('inserts nothing once the owner has maxLive tunnels not ended; ended ones do not count', async () => {
    const owner = `owner-${randomUUID()}`;
    const first = await rows.insertLive(newRow(owner), 2, LEASE_MS, ONE_ACCOUNT);
    expect(await rows.insertLive(newRow(owner), 2, LEASE_MS, ONE_ACCOUNT)).toBeDefined();
    expect(await rows.insertLive(newRow(owner), 2, LEASE_MS, ONE_ACCOUNT)).toBeUndefined();
    await prisma.tunnel.update({ where: { id: first!.id }, data: { status: 'ended' } });
    expect(await rows.insertLive(newRow(owner), 2, LEASE_MS, ONE_ACCOUNT)).toBeDefined();
    expect(await prisma.tunnel.count({ where: { ownerId: owner, status: { not: 'ended' } } })).toBe(2);
  });

  it('counts the creates that committed while it waited for the lock: 20 at once, limit 5, exactly 5 rows', async () => {
    const owner = `owner-${randomUUID()}`;
    const results = await Promise.all(Array.from({ length: 20 }, () => rows.insertLive(newRow(owner), 5, LEASE_MS, ONE_ACCOUNT)));
    expect(results.filter(Boolean)).toHaveLength(5);
    expect(await prisma.tunnel.count({ where: { ownerId: owner } })).toBe(5);
  });

  it('raises the unique violation on tunnels_live_slug_key for a slug a live tunnel holds, and not for an ended one', async () => {
    const held = newRow();
    await rows.insertLive(held, 5, LEASE_MS, ONE_ACCOUNT);
    const error = await rows.insertLive(newRow(undefined, held.slug), 5, LEASE_MS, ONE_ACCOUNT).then(() => undefined, (e: unknown) => e);
    expect(isUniqueViolation(error, 'tunnels_live_slug_key')).toBe(true);

    await prisma.tunnel.update({ where: { id: held.id }, data: { status: 'ended' } });
    expect(await rows.insertLive(newRow(undefined, held.slug), 5, LEASE_MS, ONE_ACCOUNT)).toBeDefined();
  });
});

describe('TunnelRows.transition', () => {
  it('changes a row in one of the given states and records its event; the row reads as Prisma reads it', async () => {
    const row = (await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT))!;
    const cfTunnelId = randomUUID();
    const active = await rows.transition(
      { id: row.id, from: ['creating'] },
      { status: 'active', cfTunnelId, dnsRecordId: 'dns-1' },
      { type: 'created', actor: `user:${row.ownerId}`, details: { port: 3000 } },
    );
    expect(active).toMatchObject({ id: row.id, status: 'active', cfTunnelId, dnsRecordId: 'dns-1' });
    expect(active!.updatedAt.getTime()).toBeGreaterThanOrEqual(row.updatedAt.getTime());
    expect(active).toEqual(await prisma.tunnel.findUniqueOrThrow({ where: { id: row.id } }));

    const endedAt = new Date();
    const ended = await rows.transition({ id: row.id, from: ['active'] }, { status: 'ended', endReason: 'deleted', endedAt }, { type: 'ended', actor: 'reaper' });
    expect(ended).toMatchObject({ status: 'ended', endReason: 'deleted', endedAt, cfTunnelId, dnsRecordId: 'dns-1' });
    expect(await eventsOf(row.id)).toEqual([['created', `user:${row.ownerId}`, { port: 3000 }], ['ended', 'reaper', {}]]);
  });

  it('changes nothing and records nothing when the state, the id or the owner does not match', async () => {
    const row = (await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT))!;
    const event = { type: 'delete_requested', actor: 'system' } as const;
    expect(await rows.transition({ id: row.id, from: ['active', 'ending'] }, { status: 'ending', endReason: 'deleted' }, event)).toBeUndefined();
    expect(await rows.transition({ id: row.id, from: ['creating'], ownerId: 'someone-else' }, { status: 'ending', endReason: 'deleted' }, event)).toBeUndefined();
    expect(await rows.transition({ id: randomUUID(), from: ['creating'] }, { status: 'ending', endReason: 'deleted' }, event)).toBeUndefined();
    expect(await prisma.tunnel.findUniqueOrThrow({ where: { id: row.id } })).toEqual(row);
    expect(await eventsOf(row.id)).toEqual([]);

    expect(await rows.transition({ id: row.id, from: ['creating'], ownerId: row.ownerId }, { status: 'ending', endReason: 'deleted' }, event)).toMatchObject({ status: 'ending' });
    expect(await eventsOf(row.id)).toEqual([['delete_requested', 'system', {}]]);
  });

  it('lets exactly one of many concurrent identical transitions win, with one event', async () => {
    const row = (await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT))!;
    const results = await Promise.all(Array.from({ length: 10 }, () =>
      rows.transition({ id: row.id, from: ['creating'] }, { status: 'ending', endReason: 'create_failed' }, { type: 'create_failed', actor: 'reaper' })));
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await eventsOf(row.id)).toEqual([['create_failed', 'reaper', {}]]);
  });
});

/** Makes the row's lease lapse, as if its holder had died a while ago. */
const lapse = (id: string) => prisma.$executeRaw`UPDATE tunnels SET lease_expires_at = clock_timestamp() - interval '1 second' WHERE id = ${id}::uuid`;

describe('TunnelRows leases', () => {
  it('gives the inserting create the first lease (generation 1), expiring one lease from now', async () => {
    const before = Date.now();
    const row = (await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT))!;
    expect(row.leaseGeneration).toBe(1);
    expect(row.leaseExpiresAt!.getTime()).toBeGreaterThanOrEqual(before + LEASE_MS - 1_000);
    expect(row.leaseExpiresAt!.getTime()).toBeLessThanOrEqual(Date.now() + LEASE_MS + 1_000);
  });

  it('fences the holder: after a takeover its renewals, id saves and transitions change nothing', async () => {
    const row = (await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT))!;
    expect(await rows.renewLease(row.id, 1, LEASE_MS)).toEqual({ held: true, deleteRequested: false });
    expect(await rows.saveUpstreamIds(row.id, 1, { cfTunnelId: randomUUID() })).toBe(true);

    await lapse(row.id);
    const taken = await rows.takeOver(row.id, LEASE_MS, { heartbeatTtlSeconds: 60 });
    expect(taken).toMatchObject({ taken: true, previous: 'creating', row: { status: 'ending', endReason: 'create_failed', leaseGeneration: 2 } });

    expect(await rows.renewLease(row.id, 1, LEASE_MS)).toEqual({ held: false, deleteRequested: false });
    expect(await rows.saveUpstreamIds(row.id, 1, { dnsRecordId: 'late' })).toBe(false);
    expect(await rows.transition({ id: row.id, from: ['ending'], generation: 1 }, { status: 'ended', endedAt: new Date() }, { type: 'ended', actor: 'system' })).toBeUndefined();
    expect(await prisma.tunnel.findUniqueOrThrow({ where: { id: row.id } })).toMatchObject({ status: 'ending', dnsRecordId: null, leaseGeneration: 2 });
    // The new holder's writes go through.
    expect(await rows.transition({ id: row.id, from: ['ending'], generation: 2 }, { status: 'ended', endedAt: new Date(), leaseMs: null }, { type: 'ended', actor: 'reaper' })).toMatchObject({ status: 'ended', leaseExpiresAt: null });
    expect((await eventsOf(row.id)).map(([type]) => type)).toEqual(['create_failed', 'ended']);
  });

  it('takes over an active tunnel at once, but a creating or ending one only after its lease lapsed', async () => {
    const row = (await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT))!;
    const held = await rows.takeOver(row.id, LEASE_MS, { heartbeatTtlSeconds: 60 });
    expect(held).toMatchObject({ taken: false, status: 'creating' });
    expect((held as { retryInMs: number }).retryInMs).toBeGreaterThan(LEASE_MS - 5_000);

    const active = (await rows.activate(row.id, 1, made(), { actor: 'system', details: {} }))!;
    expect(active.leaseExpiresAt).toBeNull();
    const lapsed = await rows.takeOver(row.id, LEASE_MS, { heartbeatTtlSeconds: 60 });
    expect(lapsed).toMatchObject({ taken: true, previous: 'active', row: { status: 'ending', endReason: 'heartbeat_lapsed', leaseGeneration: 2 } });
    // Ending, held by the taker: nobody else gets it until that lease lapses; then without a new event.
    expect(await rows.takeOver(row.id, LEASE_MS, { heartbeatTtlSeconds: 60 })).toMatchObject({ taken: false, status: 'ending' });
    await lapse(row.id);
    expect(await rows.takeOver(row.id, LEASE_MS, { heartbeatTtlSeconds: 60 })).toMatchObject({ taken: true, previous: 'ending', row: { leaseGeneration: 3, endReason: 'heartbeat_lapsed' } });
    expect((await eventsOf(row.id)).map(([type]) => type)).toEqual(['created', 'heartbeat_lapsed']);
    await prisma.tunnel.update({ where: { id: row.id }, data: { status: 'ended' } });
    expect(await rows.takeOver(row.id, LEASE_MS, { heartbeatTtlSeconds: 60 })).toEqual({ taken: false, status: 'ended' });
    expect(await rows.takeOver(randomUUID(), LEASE_MS, { heartbeatTtlSeconds: 60 })).toEqual({ taken: false, status: 'missing' });
  });

  it('lets exactly one of many concurrent takeovers win', async () => {
    const row = (await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT))!;
    await lapse(row.id);
    const results = await Promise.all(Array.from({ length: 10 }, () => rows.takeOver(row.id, LEASE_MS, { heartbeatTtlSeconds: 60 })));
    expect(results.filter((r) => r.taken)).toHaveLength(1);
    expect(await eventsOf(row.id)).toHaveLength(1);
  });

  it('refuses to activate a create whose lease lapsed, even with its own generation', async () => {
    const row = (await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT))!;
    await lapse(row.id);
    expect(await rows.activate(row.id, 1, made(), { actor: 'system', details: {} })).toBeUndefined();
    expect(await eventsOf(row.id)).toEqual([]);
  });

  it('activates a create in one statement: the ids on the row, its lease cleared, one created event', async () => {
    const row = (await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT))!;
    const ids = made();
    const active = await rows.activate(row.id, 1, ids, { actor: `user:${row.ownerId}`, details: { port: row.port } });
    expect(active).toMatchObject({ id: row.id, status: 'active', ...ids, leaseExpiresAt: null, leaseGeneration: 1, slug: row.slug, hostname: row.hostname });
    expect(active!.updatedAt.getTime()).toBeGreaterThanOrEqual(row.updatedAt.getTime());
    expect(await eventsOf(row.id)).toEqual([['created', `user:${row.ownerId}`, { port: row.port }]]);
    // Only once: the row is no longer creating.
    expect(await rows.activate(row.id, 1, made(), { actor: 'system', details: {} })).toBeUndefined();
    expect(await eventsOf(row.id)).toHaveLength(1);
  });

  it('refuses to activate for a holder whose lease was taken over, and lets one of many concurrent activations win', async () => {
    const taken = (await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT))!;
    await lapse(taken.id);
    expect(await rows.takeOver(taken.id, LEASE_MS, { heartbeatTtlSeconds: 60 })).toMatchObject({ taken: true, row: { leaseGeneration: 2 } });
    expect(await rows.activate(taken.id, 1, made(), { actor: 'system', details: {} })).toBeUndefined();
    expect(await rows.activate(taken.id, 2, made(), { actor: 'system', details: {} })).toBeUndefined(); // ending, not creating
    expect(await prisma.tunnel.findUniqueOrThrow({ where: { id: taken.id } })).toMatchObject({ status: 'ending', cfTunnelId: null });

    const row = (await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT))!;
    const results = await Promise.all(Array.from({ length: 10 }, () => rows.activate(row.id, 1, made(), { actor: 'system', details: {} })));
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await eventsOf(row.id)).toHaveLength(1);
  });

  it('records a DELETE of a creating tunnel once, tells the holder at its next renewal, and blocks activation', async () => {
    const row = (await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT))!;
    const event = { type: 'delete_requested', actor: `user:${row.ownerId}` } as const;
    expect(await rows.requestDelete(row.id, 'someone-else', event)).toBeUndefined();
    expect(await rows.requestDelete(row.id, row.ownerId, event)).toMatchObject({ status: 'creating', deleteRequestedAt: expect.any(Date) });
    expect(await rows.requestDelete(row.id, row.ownerId, event)).toMatchObject({ status: 'creating' });
    expect(await eventsOf(row.id)).toHaveLength(1);
    expect(await rows.renewLease(row.id, 1, LEASE_MS)).toEqual({ held: true, deleteRequested: true });
    expect(await rows.activate(row.id, 1, made(), { actor: 'system', details: {} })).toBeUndefined();
    // A lapsed one is taken over as deleted, not as a failed create.
    await lapse(row.id);
    expect(await rows.takeOver(row.id, LEASE_MS, { heartbeatTtlSeconds: 60 })).toMatchObject({ taken: true, row: { endReason: 'deleted' } });
  });

  it('lists creating and ending rows whose lease lapsed longer ago than the grace, and nothing else', async () => {
    const fresh = (await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT))!;
    const old = (await rows.insertLive(newRow(), 5, LEASE_MS, ONE_ACCOUNT))!;
    await prisma.$executeRaw`UPDATE tunnels SET lease_expires_at = clock_timestamp() - interval '1 hour' WHERE id = ${old.id}::uuid`;
    const abandoned = await rows.abandoned(60_000, 1000);
    expect(abandoned).toContain(old.id);
    expect(abandoned).not.toContain(fresh.id);
  });
});

describe('TunnelRows.insertLive: Cloudflare account capacity', () => {
  /** Two accounts no other test uses, so their counts are this test's alone. */
  function twoAccounts(capacities: [number, number]): Placement {
    const tag = randomUUID().slice(0, 8);
    return { accountIds: [`a-${tag}`, `b-${tag}`], primaryAccountId: `a-${tag}`, capacities: [...capacities], domains: [`a-${tag}.test`, `b-${tag}.test`] };
  }
  const insert = (placement: Placement, row = newRow()) => rows.insertLive(row, 1_000, LEASE_MS, placement);

  it('places each row in the least loaded account with room, and names its host under that account\'s domain', async () => {
    const placement = twoAccounts([4, 2]);
    const placed = [];
    for (let i = 0; i < 6; i++) placed.push((await insert(placement))!);
    // Load is live/capacity, ties to the first listed: a (0 = 0), b (1/4 > 0), a (1/4 < 1/2), a (2/4 = 1/2), b (3/4 > 1/2), a (3/4 < 2/2).
    expect(placed.map((r) => r.cfAccountId)).toEqual(['a', 'b', 'a', 'a', 'b', 'a'].map((x) => `${x}-${placement.accountIds[0]!.slice(2)}`));
    for (const row of placed) expect(row.hostname).toBe(`${row.slug}.${placement.domains[placement.accountIds.indexOf(row.cfAccountId!)]}`);
  });

  it('refuses with AccountsFullError once every account is at its capacity; an ended tunnel frees its slot', async () => {
    const placement = twoAccounts([1, 1]);
    const first = (await insert(placement))!;
    await insert(placement);
    await expect(insert(placement)).rejects.toBeInstanceOf(AccountsFullError);
    await prisma.tunnel.update({ where: { id: first.id }, data: { status: 'ended' } });
    expect((await insert(placement))?.cfAccountId).toBe(first.cfAccountId);
  });

  it('admits exactly one of 20 concurrent creates by different users when one slot is left', async () => {
    const placement = twoAccounts([3, 2]);
    for (let i = 0; i < 4; i++) await insert(placement);
    const settled = await Promise.allSettled(Array.from({ length: 20 }, () => insert(placement)));
    expect(settled.filter((s) => s.status === 'fulfilled')).toHaveLength(1);
    expect(settled.filter((s) => s.status === 'rejected').every((s) => (s as PromiseRejectedResult).reason instanceof AccountsFullError)).toBe(true);
    const live = await prisma.tunnel.groupBy({ by: ['cfAccountId'], where: { cfAccountId: { in: placement.accountIds }, status: { not: 'ended' } }, _count: true });
    expect(Object.fromEntries(live.map((g) => [g.cfAccountId, g._count]))).toEqual({ [placement.accountIds[0]!]: 3, [placement.accountIds[1]!]: 2 });
  });

  it('counts rows from before accounts were recorded (no account) against the first account', async () => {
    const placement = twoAccounts([1, 5]);
    const legacy = (await insert({ ...placement, capacities: [1_000, 5] }))!;
    await prisma.tunnel.update({ where: { id: legacy.id }, data: { cfAccountId: null } });
    const placedAfter = (await insert(placement))!;
    expect(placedAfter.cfAccountId).toBe(placement.accountIds[1]);
    const counts = await rows.liveCountsByAccount(placement.accountIds[0]!);
    expect([counts.get(placement.accountIds[0]!), counts.get(placement.accountIds[1]!)]).toEqual([1, 1]);
    // Only against the primary: a placement without it (its budget spent) does not count the row for the others.
    expect((await insert({ ...placement, accountIds: [placement.accountIds[1]!], capacities: [2], domains: [placement.domains[1]!] }))?.cfAccountId).toBe(placement.accountIds[1]);
    await expect(insert({ ...placement, accountIds: [placement.accountIds[1]!], capacities: [2], domains: [placement.domains[1]!] })).rejects.toBeInstanceOf(AccountsFullError);
    // A row without an account counts against whichever primary a placement names (in production, always the same one): end it.
    await prisma.tunnel.update({ where: { id: legacy.id }, data: { status: 'ended' } });
  });

  it('checks the user\'s own limit before the accounts: a user at their limit is told so even when every account is full', async () => {
    const placement = twoAccounts([1, 1]);
    const owner = `owner-${randomUUID()}`;
    await rows.insertLive(newRow(owner), 1, LEASE_MS, placement);
    await insert(placement);
    expect(await rows.insertLive(newRow(owner), 1, LEASE_MS, placement)).toBeUndefined();
  });
});
