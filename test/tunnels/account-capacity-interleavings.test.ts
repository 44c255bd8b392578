import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type TestBroker, useTestBroker } from '../helpers/broker.js';

/**
 * Concurrent creates, DELETEs and reaps against two accounts with room for 2 and 1 tunnels,
 * in orders fast-check generates: its scheduler decides when each operation starts relative
 * to the others still in flight (their database and Cloudflare round trips). Invariants,
 * checked once each sequence settles:
 * - never more live rows in an account than its capacity (and the emulators, which refuse
 *   past the same capacity, never refused: no create answered anything but 201 or 503
 *   TUNNEL_CAPACITY_EXHAUSTED);
 * - every active tunnel has its tunnel and its CNAME in its own account, and in no other;
 * - every live upstream tunnel belongs to a live row of that account.
 * A failure prints fast-check's seed and path; pass them to fc.assert ({ seed, path }) to replay it.
 */
const CAPACITIES = [2, 1] as const;
const SEED = 14_014;
const RUNS = 12;

type Command = { kind: 'create' } | { kind: 'delete'; pick: number } | { kind: 'reap'; pick: number };

const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ kind: 'create' as const }) },
  { weight: 1, arbitrary: fc.nat(7).map((pick) => ({ kind: 'delete' as const, pick })) },
  { weight: 1, arbitrary: fc.nat(7).map((pick) => ({ kind: 'reap' as const, pick })) },
);

interface Made {
  userId: string;
  tunnelId: string;
}

async function run(b: TestBroker, cmd: Command, made: Made[], problems: string[]): Promise<void> {
  if (cmd.kind === 'create') {
    const userId = `user-${randomUUID()}`;
    const res = await b.app.inject({ method: 'POST', url: '/v1/tunnels', headers: { ...b.auth(userId), 'content-type': 'application/json' }, payload: '{"port":3000}' });
    if (res.statusCode === 201) made.push({ userId, tunnelId: res.json<{ tunnelId: string }>().tunnelId });
    else if (!(res.statusCode === 503 && res.json<{ code: string }>().code === 'TUNNEL_CAPACITY_EXHAUSTED')) problems.push(`create answered ${res.statusCode} ${res.body}`);
    return;
  }
  const target = made[cmd.pick % Math.max(1, made.length)];
  if (!target) return;
  if (cmd.kind === 'delete') {
    const res = await b.app.inject({ method: 'DELETE', url: `/v1/tunnels/${target.tunnelId}`, headers: b.auth(target.userId) });
    if (res.statusCode !== 204) problems.push(`delete answered ${res.statusCode} ${res.body}`);
    return;
  }
  await b.app.tunnels.endDue(target.tunnelId);
}

async function checkInvariants(b: TestBroker): Promise<string[]> {
  const problems: string[] = [];
  const rows = await b.app.prisma.tunnel.findMany({ where: { status: { not: 'ended' } } });
  b.emulators.forEach((emulator, i) => {
    const own = rows.filter((r) => r.cfAccountId === emulator.accountId);
    if (own.length > CAPACITIES[i]!) problems.push(`account ${i} has ${own.length} live rows, capacity ${CAPACITIES[i]}`);
    for (const t of emulator.liveTunnels()) {
      if (!own.some((r) => t.name === `${b.config.cloudflare.tunnelNamePrefix}${r.id}`)) problems.push(`account ${i} holds tunnel ${t.name} with no live row of its own`);
    }
  });
  for (const row of rows.filter((r) => r.status === 'active')) {
    b.emulators.forEach((emulator, i) => {
      const mine = emulator.accountId === row.cfAccountId;
      const tunnel = emulator.liveTunnels().some((t) => t.id === row.cfTunnelId);
      const record = emulator.dnsRecords().some((r) => r.name === row.hostname && r.content === `${row.cfTunnelId}.cfargotunnel.com`);
      if (tunnel !== mine || record !== mine) problems.push(`active ${row.hostname} (account ${row.cfAccountId}): emulator ${i} tunnel=${tunnel} record=${record}`);
    });
  }
  return problems;
}

describe('account capacity under generated interleavings', () => {
  const broker = useTestBroker({ accounts: [{ name: 'alpha', maxTunnels: CAPACITIES[0] }, { name: 'beta', maxTunnels: CAPACITIES[1] }] });

  it('never exceeds an account\'s capacity, and keeps every tunnel and its DNS record in one account', async () => {
    await fc.assert(
      fc.asyncProperty(fc.scheduler(), fc.array(command, { minLength: 3, maxLength: 10 }), async (s, commands) => {
        const made: Made[] = [];
        const problems: string[] = [];
        // The scheduler releases the operations' starts in an order of its choosing, each
        // while the earlier ones are still in flight.
        const started = commands.map((cmd, i) => s.schedule(Promise.resolve(), `${cmd.kind}#${i}`).then(() => run(broker, cmd, made, problems)));
        await s.waitFor(Promise.all(started));
        problems.push(...(await checkInvariants(broker)));
        // Settle: end whatever is left, so the next sequence starts with empty accounts.
        for (const m of made) await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${m.tunnelId}`, headers: broker.auth(m.userId) });
        const left = broker.emulators.map((e) => e.liveTunnels().length);
        if (left.some((n) => n > 0)) problems.push(`upstream tunnels left after every DELETE: ${left.join(', ')}`);
        expect(problems, `${s.report().map((r) => r.label).join(' ')}`).toEqual([]);
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true },
    );
  }, 120_000);
});
