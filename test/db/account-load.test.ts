/**
 * `cloudflare_account_load` (migration cloudflare_account_load) is what placing a create reads
 * instead of counting rows: it must equal the live rows per account after any sequence of
 * inserts, status changes, account changes and deletes, including concurrent ones. fast-check
 * generates the sequences (seeded; a failure prints its seed and path for fc.assert to replay),
 * run over several real connections at once.
 */
import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

const ACCOUNTS = ['acc-a', 'acc-b', null] as const;
const STATUSES = ['creating', 'active', 'ending', 'ended'] as const;

type Op =
  | { kind: 'insert'; account: number; status: number }
  | { kind: 'status'; pick: number; status: number }
  | { kind: 'move'; pick: number; account: number }
  | { kind: 'delete'; pick: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('insert' as const), account: fc.nat(2), status: fc.nat(3) }),
  fc.record({ kind: fc.constant('status' as const), pick: fc.nat(50), status: fc.nat(3) }),
  fc.record({ kind: fc.constant('move' as const), pick: fc.nat(50), account: fc.nat(2) }),
  fc.record({ kind: fc.constant('delete' as const), pick: fc.nat(50) }),
);

let db: TestDatabase;
let pool: pg.Pool;
beforeAll(async () => {
  db = await createTestDatabase();
  pool = new pg.Pool({ connectionString: db.url, max: 4 });
});
afterAll(async () => {
  await pool?.end();
});

async function apply(ids: string[], o: Op): Promise<void> {
  const id = ids.length > 0 && 'pick' in o ? ids[o.pick % ids.length]! : undefined;
  if (o.kind === 'insert') {
    const newId = randomUUID();
    ids.push(newId);
    const slug = `s-${newId.slice(0, 8)}`;
    await pool.query(`INSERT INTO tunnels (id, owner_id, slug, hostname, port, status, cf_account_id) VALUES ($1, 'u', $2, $3, 3000, $4::tunnel_status, $5)`, [newId, slug, `${slug}.test`, STATUSES[o.status], ACCOUNTS[o.account]]);
  } else if (id && o.kind === 'status') {
    await pool.query('UPDATE tunnels SET status = $2::tunnel_status WHERE id = $1', [id, STATUSES[o.status]]);
  } else if (id && o.kind === 'move') {
    await pool.query('UPDATE tunnels SET cf_account_id = $2 WHERE id = $1', [id, ACCOUNTS[o.account]]);
  } else if (id && o.kind === 'delete') {
    await pool.query('DELETE FROM tunnels WHERE id = $1', [id]);
  }
}

it('keeps the live count of every account equal to its live rows, whatever the sequence and interleaving', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.array(op, { maxLength: 15 }), { minLength: 1, maxLength: 4 }), async (lanes) => {
      await pool.query('DELETE FROM tunnels');
      const ids: string[] = [];
      // Each lane runs its operations in order; the lanes run at once, on separate connections.
      await Promise.all(lanes.map(async (lane) => {
        for (const o of lane) await apply(ids, o);
      }));
      const counted = await pool.query<{ key: string; live: number }>(`SELECT coalesce(cf_account_id, '') AS key, count(*)::int AS live FROM tunnels WHERE status <> 'ended' GROUP BY 1`);
      const kept = await pool.query<{ key: string; live: number }>(`SELECT cf_account_id AS key, live FROM cloudflare_account_load WHERE live <> 0`);
      const byKey = (rows: Array<{ key: string; live: number }>) => Object.fromEntries(rows.map((r) => [r.key, r.live]));
      expect(byKey(kept.rows)).toEqual(byKey(counted.rows));
    }),
    { seed: 20_261_130, numRuns: 40 },
  );
});
