import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUniqueViolation } from '../../src/db/database-error.js';
import type { PrismaClient } from '../../src/generated/prisma/client.js';
import { createPrismaClient } from '../../src/plugins/prisma.js';
import { type NewTunnelRow, TunnelRows } from '../../src/tunnels/tunnel-rows.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

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
  return { id: randomUUID(), ownerId, slug, hostname: `${slug}.tunnels.test`, port: 3000 };
}

const eventsOf = async (tunnelId: string) =>
  (await prisma.tunnelEvent.findMany({ where: { tunnelId }, orderBy: { id: 'asc' } })).map((e) => [e.type, e.actor, e.details]);

describe('TunnelRows.insertLive', () => {
  it('returns the row exactly as the Prisma query API reads it: every field, named and typed alike', async () => {
    const inserted = await rows.insertLive(newRow(), 5);
    expect(inserted).toBeDefined();
    expect(inserted).toEqual(await prisma.tunnel.findUniqueOrThrow({ where: { id: inserted!.id } }));
    expect(inserted).toMatchObject({ status: 'creating', cfTunnelId: null, endReason: null, endedAt: null, createdAt: expect.any(Date) });
  });

  it('inserts nothing once the owner has maxLive tunnels not ended; ended ones do not count', async () => {
    const owner = `owner-${randomUUID()}`;
    const first = await rows.insertLive(newRow(owner), 2);
    expect(await rows.insertLive(newRow(owner), 2)).toBeDefined();
    expect(await rows.insertLive(newRow(owner), 2)).toBeUndefined();
    await prisma.tunnel.update({ where: { id: first!.id }, data: { status: 'ended' } });
    expect(await rows.insertLive(newRow(owner), 2)).toBeDefined();
    expect(await prisma.tunnel.count({ where: { ownerId: owner, status: { not: 'ended' } } })).toBe(2);
  });

  it('counts the creates that committed while it waited for the lock: 20 at once, limit 5, exactly 5 rows', async () => {
    const owner = `owner-${randomUUID()}`;
    const results = await Promise.all(Array.from({ length: 20 }, () => rows.insertLive(newRow(owner), 5)));
    expect(results.filter(Boolean)).toHaveLength(5);
    expect(await prisma.tunnel.count({ where: { ownerId: owner } })).toBe(5);
  });

  it('raises the unique violation on tunnels_live_slug_key for a slug a live tunnel holds, and not for an ended one', async () => {
    const held = newRow();
    await rows.insertLive(held, 5);
    const error = await rows.insertLive(newRow(undefined, held.slug), 5).then(() => undefined, (e: unknown) => e);
    expect(isUniqueViolation(error, 'tunnels_live_slug_key')).toBe(true);

    await prisma.tunnel.update({ where: { id: held.id }, data: { status: 'ended' } });
    expect(await rows.insertLive(newRow(undefined, held.slug), 5)).toBeDefined();
  });
});

describe('TunnelRows.transition', () => {
  it('changes a row in one of the given states and records its event; the row reads as Prisma reads it', async () => {
    const row = (await rows.insertLive(newRow(), 5))!;
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
    const row = (await rows.insertLive(newRow(), 5))!;
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
    const row = (await rows.insertLive(newRow(), 5))!;
    const results = await Promise.all(Array.from({ length: 10 }, () =>
      rows.transition({ id: row.id, from: ['creating'] }, { status: 'ending', endReason: 'create_failed' }, { type: 'create_failed', actor: 'reaper' })));
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(await eventsOf(row.id)).toEqual([['create_failed', 'reaper', {}]]);
  });
});

describe('TunnelRows.touchEnding', () => {
  it('moves updated_at of an ending row only', async () => {
    const row = (await rows.insertLive(newRow(), 5))!;
    expect(await rows.touchEnding(row.id)).toBeUndefined();
    await prisma.tunnel.update({ where: { id: row.id }, data: { status: 'ending', updatedAt: new Date(0) } });
    const touched = await rows.touchEnding(row.id);
    expect(touched!.updatedAt.getTime()).toBeGreaterThan(0);
    expect(touched).toEqual(await prisma.tunnel.findUniqueOrThrow({ where: { id: row.id } }));
  });
});
