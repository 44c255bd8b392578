import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { HEARTBEAT_BUCKET_KEYS } from '../../src/tunnels/heartbeat-keys.js';
import { eventually, useTestBroker } from '../helpers/broker.js';

/**
 * What a create waits for (src/tunnels/tunnel-service.ts): the Redis check-back goes out with
 * the tunnel create, and the upstream ids are saved alongside the DNS record and the ingress,
 * so neither is a step of its own on the critical path. These tests hold one of them back
 * and show the create going on without it, and that a create whose check-back fails still
 * leaves nothing behind upstream.
 */
const broker = useTestBroker();

function create(userId: string) {
  return broker.app.inject({
    method: 'POST',
    url: '/v1/tunnels',
    headers: { ...broker.auth(userId), 'content-type': 'application/json' },
    payload: JSON.stringify({ port: 3000 }),
  });
}

let cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups = [];
  broker.emulator.clearFaults();
});

describe('the critical path of a create', () => {
  it('sends the DNS record and the ingress while the tunnel id is still being saved', async () => {
    const userId = `user-${randomUUID()}`;
    // Time to take the row's lock between its insert and the save of its tunnel id.
    const removeLatency = broker.emulator.injectFault({ kind: 'latency', endpoint: 'tunnel.create', latencyMs: 400 });
    const dnsBefore = broker.emulator.count('dns.create');
    const ingressBefore = broker.emulator.count('tunnel.configuration.put');
    let settled = false;
    const pending = create(userId).finally(() => {
      settled = true;
    });

    const locker = new pg.Client({ connectionString: broker.db.url });
    await locker.connect();
    cleanups.push(() => locker.end());
    const row = await eventually(async () => {
      const found = await locker.query<{ id: string }>("SELECT id FROM tunnels WHERE owner_id = $1 AND status = 'creating'", [userId]);
      return found.rows[0];
    }, { what: 'the creating row', intervalMs: 5 });
    // Holds the row: the save of the tunnel id (an UPDATE of this row) waits until COMMIT.
    await locker.query('BEGIN');
    await locker.query('SELECT id FROM tunnels WHERE id = $1 FOR UPDATE', [row.id]);
    removeLatency();

    await broker.emulator.waitForRequest({ endpoint: 'dns.create', answered: true }, 5_000);
    await broker.emulator.waitForRequest({ endpoint: 'tunnel.configuration.put', answered: true }, 5_000);
    expect(broker.emulator.count('dns.create')).toBe(dnsBefore + 1);
    expect(broker.emulator.count('tunnel.configuration.put')).toBe(ingressBefore + 1);
    // Activation still waits for the save.
    expect(settled).toBe(false);
    const stillCreating = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: row.id } });
    expect(stillCreating.status).toBe('creating');

    await locker.query('COMMIT');
    const res = await pending;
    expect(res.statusCode).toBe(201);
    const active = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: row.id } });
    expect(active.status).toBe('active');
    expect(active.cfTunnelId).toBe(JSON.parse(Buffer.from(res.json().cloudflaredToken, 'base64').toString('utf8')).t);
    expect(active.dnsRecordId).toBe(broker.emulator.dnsRecords().find((r) => r.name === active.hostname)?.id);
  });

  it('a create whose Redis check-back fails removes the tunnel it made alongside, and answers 500', async () => {
    const userId = `user-${randomUUID()}`;
    // Every bucket's deadline set becomes a string: scheduling any check-back fails (WRONGTYPE).
    for (const keys of HEARTBEAT_BUCKET_KEYS) await broker.redis.set(keys.deadlines, 'not a sorted set');
    cleanups.push(async () => {
      for (const keys of HEARTBEAT_BUCKET_KEYS) await broker.redis.del(keys.deadlines);
    });
    const creates = broker.emulator.count('tunnel.create');

    const res = await create(userId);
    expect(res.statusCode).toBe(500);
    expect(res.json().code).toBe('INTERNAL_ERROR');
    // The tunnel create went out with the check-back, and the rollback removed what it made.
    expect(broker.emulator.count('tunnel.create')).toBe(creates + 1);
    const row = await broker.app.prisma.tunnel.findFirstOrThrow({ where: { ownerId: userId } });
    const name = `${broker.config.cloudflare.tunnelNamePrefix}${row.id}`;
    await eventually(() => !broker.emulator.liveTunnels().some((t) => t.name === name), { what: 'the upstream tunnel removed' });
    expect(broker.emulator.dnsRecords().some((r) => r.name === row.hostname)).toBe(false);
    const ended = await eventually(async () => {
      const current = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: row.id } });
      return current.status === 'ended' ? current : undefined;
    }, { what: 'the row ended' });
    expect(ended.endReason).toBe('create_failed');
  });
});
