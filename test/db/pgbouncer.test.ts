import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeDue, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { type PgBouncer, startPgBouncer } from '../helpers/pgbouncer.js';
import { testDatabaseServerUrl } from '../helpers/test-services.js';

// Two server connections for a broker pool of ten: clients really share them, a transaction at a time.
const SERVER_CONNECTIONS = 2;

let db: TestDatabase;
let bouncer: PgBouncer;
let broker: TestBroker;

beforeAll(async () => {
  db = await createTestDatabase();
  bouncer = await startPgBouncer({ serverUrl: testDatabaseServerUrl(), databases: [db.name], poolSize: SERVER_CONNECTIONS, connectQuery: 'SET statement_timeout = 15000' });
  broker = await startTestBroker({
    db: { url: bouncer.url(db.name), name: db.name, drop: () => db.drop() },
    env: { DIRECT_DATABASE_URL: db.url, DATABASE_POOL_MAX: '10', CREATE_RATE_LIMIT_PER_MINUTE: '1000' },
  });
});
afterAll(async () => {
  await broker?.close();
  await bouncer?.close();
  await db?.drop();
});

const create = (userId: string, payload: object) =>
  broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload });

describe('the broker through PgBouncer in transaction mode', () => {
  it('talks to the server through the pooler, with the statement timeout that connect_query sets', async () => {
    const [row] = await broker.app.prisma.$queryRaw<{ port: number; timeout: string }[]>`SELECT inet_server_port() AS port, current_setting('statement_timeout') AS timeout`;
    expect(row!.port).toBe(Number(new URL(db.url).port)); // the server's port, reached through the pooler's
    expect(new URL(broker.config.databaseUrl).port).not.toBe(new URL(db.url).port);
    expect(row!.timeout).toBe('15s');
  });

  it('keeps the per-user limit: fifteen parallel creates by one user yield exactly five tunnels', async () => {
    const userId = `user-${randomUUID()}`;
    const results = await Promise.all(Array.from({ length: 15 }, (_, i) => create(userId, { port: 3000 + i })));
    expect(results.filter((r) => r.statusCode === 201)).toHaveLength(5);
    expect(results.filter((r) => r.statusCode === 429).map((r) => r.json().code)).toEqual(Array(10).fill('TUNNEL_LIMIT_EXCEEDED'));
    expect(await broker.app.prisma.tunnel.count({ where: { ownerId: userId, status: { not: 'ended' } } })).toBe(5);
  });

  it('keeps slugs unique: ten parallel creates of one slug yield exactly one tunnel', async () => {
    const slug = `pool-${randomUUID().slice(0, 8)}`;
    const results = await Promise.all(Array.from({ length: 10 }, () => create(`user-${randomUUID()}`, { port: 3000, requestedSlug: slug })));
    expect(results.filter((r) => r.statusCode === 201)).toHaveLength(1);
    expect(results.filter((r) => r.statusCode === 409).map((r) => r.json().code)).toEqual(Array(9).fill('TUNNEL_SLUG_CONFLICT'));
    expect(broker.emulator.dnsRecords().filter((r) => r.name.startsWith(`${slug}.`))).toHaveLength(1);
  });

  it('reaps a silent tunnel, leaving nothing upstream', async () => {
    const created = await create(`user-${randomUUID()}`, { port: 3000 });
    expect(created.statusCode).toBe(201);
    const { tunnelId } = created.json() as { tunnelId: string };
    await makeDue(broker, tunnelId);
    expect((await broker.app.reaper!.sweep()).ended).toBe(1);
    expect(await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: tunnelId }, select: { status: true } })).toEqual({ status: 'ended' });
    expect(broker.emulator.liveTunnels().filter((t) => t.name.endsWith(tunnelId))).toEqual([]);
  });
});
