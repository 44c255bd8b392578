import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { useTestBroker } from '../helpers/broker.js';

const broker = useTestBroker({ env: { CREATE_RATE_LIMIT_PER_MINUTE: '1000' } });

const create = (userId: string, payload: object) =>
  broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload });

describe('concurrent creates', () => {
  it('fifteen parallel creates by one user yield exactly five tunnels', async () => {
    const userId = `user-${randomUUID()}`;
    const results = await Promise.all(Array.from({ length: 15 }, (_, i) => create(userId, { port: 3000 + i })));
    const codes = results.map((r) => r.statusCode).sort();
    expect(codes.filter((c) => c === 201)).toHaveLength(5);
    expect(codes.filter((c) => c === 429)).toHaveLength(10);
    for (const r of results.filter((r) => r.statusCode === 429)) expect(r.json().code).toBe('TUNNEL_LIMIT_EXCEEDED');
    expect(await broker.app.prisma.tunnel.count({ where: { ownerId: userId, status: { not: 'ended' } } })).toBe(5);
    // Nothing was made upstream for the refused ones.
    const ours = broker.emulator.liveTunnels().filter((t) => results.some((r) => r.statusCode === 201 && t.name.endsWith(r.json().tunnelId)));
    expect(ours).toHaveLength(5);
  });

  it('ten parallel creates of one slug yield exactly one tunnel', async () => {
    const slug = `race-${randomUUID().slice(0, 8)}`;
    const results = await Promise.all(Array.from({ length: 10 }, () => create(`user-${randomUUID()}`, { port: 3000, requestedSlug: slug })));
    expect(results.filter((r) => r.statusCode === 201)).toHaveLength(1);
    const conflicts = results.filter((r) => r.statusCode === 409);
    expect(conflicts).toHaveLength(9);
    for (const r of conflicts) expect(r.json().code).toBe('TUNNEL_SLUG_CONFLICT');
    expect(broker.emulator.dnsRecords().filter((r) => r.name.startsWith(`${slug}.`))).toHaveLength(1);
  });
});
