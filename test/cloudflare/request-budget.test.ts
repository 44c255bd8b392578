/**
 * The shared Cloudflare request budget, against real Redis. Several RequestBudget
 * instances on one key space with their own connections stand for several brokers.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { RedisClient as Redis } from '../../src/redis/redis-client.js';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_REQUEST_BUDGET_KEY, RequestBudget } from '../../src/cloudflare/request-budget.js';
import { testKeyPrefix, testRedisClient } from '../helpers/redis-keys.js';

const clients: Redis[] = [];

/** A fresh key space, and `instances` clients on it (one per simulated broker). */
function keySpace(instances = 1): Redis[] {
  const prefix = testKeyPrefix();
  const made = Array.from({ length: instances }, () => testRedisClient(undefined, prefix));
  clients.push(...made);
  return made;
}

afterAll(() => {
  for (const client of clients) client.disconnect();
});

async function admittedCount(budget: RequestBudget, attempts: number): Promise<number> {
  let ok = 0;
  for (let i = 0; i < attempts; i++) if ((await budget.tryAcquire()).ok) ok++;
  return ok;
}

describe('RequestBudget', () => {
  it('admits exactly `requests` per window, then says when the next slot frees', async () => {
    const [redis] = keySpace();
    const budget = new RequestBudget(redis!, { requests: 5, windowSeconds: 2 });
    expect(await budget.remaining()).toBe(5);
    expect(await admittedCount(budget, 5)).toBe(5);
    expect(await budget.remaining()).toBe(0);

    const first = await budget.tryAcquire();
    expect(first.ok).toBe(false);
    const r1 = (first as { retryAfterMs: number }).retryAfterMs;
    expect(r1).toBeGreaterThan(1_500);
    expect(r1).toBeLessThanOrEqual(2_000);

    // Retry-After is measured on Redis's clock: it shrinks exactly as time passes.
    const before = Date.now();
    await sleep(200);
    const second = await budget.tryAcquire();
    const elapsed = Date.now() - before;
    expect(second.ok).toBe(false);
    const r2 = (second as { retryAfterMs: number }).retryAfterMs;
    expect(Math.abs(r1 - r2 - elapsed)).toBeLessThan(60);

    // And it is exact: right after it, a slot is free.
    await sleep(r2 + 20);
    expect(await budget.tryAcquire()).toEqual({ ok: true });
  });

  it('is a sliding window: no span of `windowSeconds` ever holds more than `requests`, across two instances', async () => {
    const [a, b, observer] = keySpace(3);
    const limit = 10;
    const windowMs = 1_000;
    const budgets = [new RequestBudget(a!, { requests: limit, windowSeconds: windowMs / 1000 }), new RequestBudget(b!, { requests: limit, windowSeconds: windowMs / 1000 })];

    // Every admission stays in the set for a whole window; sampling it far more often than
    // that sees every admission with its exact Redis timestamp.
    const seen = new Map<string, number>();
    let sampling = true;
    const sampler = (async () => {
      for (let i = 0; i < 1_000 && sampling; i++) {
        const entries = await observer!.zrange(DEFAULT_REQUEST_BUDGET_KEY, 0, -1, 'WITHSCORES');
        for (let j = 0; j < entries.length; j += 2) seen.set(entries[j]!, Number(entries[j + 1]));
        await sleep(50);
      }
    })();

    // Both "brokers" hammer the budget for 2.5 windows, with uneven gaps.
    const until = Date.now() + 2.5 * windowMs;
    let admitted = 0;
    await Promise.all(
      budgets.flatMap((budget) =>
        Array.from({ length: 4 }, async () => {
          for (let i = 0; i < 10_000 && Date.now() < until; i++) {
            if ((await budget.tryAcquire()).ok) admitted++;
            await sleep(Math.random() * 15);
          }
        }),
      ),
    );
    await sleep(100);
    sampling = false;
    await sampler;

    const times = [...seen.values()].sort((x, y) => x - y);
    expect(times.length).toBe(admitted);
    // The budget was really used: at least two full windows' worth went through...
    expect(admitted).toBeGreaterThanOrEqual(2 * limit);
    // ...and every window [t, t + W) starting at an admission holds at most `limit`.
    let worst = 0;
    for (let i = 0; i < times.length; i++) {
      let j = i;
      while (j < times.length && times[j]! < times[i]! + windowMs) j++;
      worst = Math.max(worst, j - i);
    }
    expect(worst).toBeLessThanOrEqual(limit);
    expect(worst).toBe(limit);
  });

  it('is shared: what one instance spends, the other cannot', async () => {
    const [a, b] = keySpace(2);
    const one = new RequestBudget(a!, { requests: 10, windowSeconds: 60 });
    const two = new RequestBudget(b!, { requests: 10, windowSeconds: 60 });
    expect(await admittedCount(one, 6)).toBe(6);
    expect(await two.remaining()).toBe(4);
    expect(await admittedCount(two, 10)).toBe(4);
    expect((await one.tryAcquire()).ok).toBe(false);
  });

  it('admits exactly `requests` of 50 concurrent attempts from two instances', async () => {
    const [a, b] = keySpace(2);
    const budgets = [new RequestBudget(a!, { requests: 10, windowSeconds: 60 }), new RequestBudget(b!, { requests: 10, windowSeconds: 60 })];
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => budgets[i % 2]!.tryAcquire()));
    expect(results.filter((r) => r.ok)).toHaveLength(10);
    expect(await a!.zcard(DEFAULT_REQUEST_BUDGET_KEY)).toBe(10);
  });

  it('a reserve leaves slots to callers without one', async () => {
    const [redis] = keySpace();
    const budget = new RequestBudget(redis!, { requests: 10, windowSeconds: 60 });
    let withReserve = 0;
    for (let i = 0; i < 10; i++) if ((await budget.tryAcquire({ reserve: 3 })).ok) withReserve++;
    expect(withReserve).toBe(7);
    expect(await admittedCount(budget, 5)).toBe(3);
  });

  it('takes several slots in one call, as many as are free, and counts each of them', async () => {
    const [redis] = keySpace();
    const budget = new RequestBudget(redis!, { requests: 5, windowSeconds: 60 });
    expect(await budget.tryAcquireUpTo(3)).toEqual({ ok: true, taken: 3 });
    expect(await budget.remaining()).toBe(2);
    expect(await budget.tryAcquireUpTo(3)).toEqual({ ok: true, taken: 2 });
    expect(await budget.remaining()).toBe(0);
    const refused = await budget.tryAcquireUpTo(3);
    expect(refused.ok).toBe(false);
    expect((refused as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(59_000);
    expect(await redis!.zcard(DEFAULT_REQUEST_BUDGET_KEY)).toBe(5);
  });

  it('a reserve caps what several slots at once can take', async () => {
    const [redis] = keySpace();
    const budget = new RequestBudget(redis!, { requests: 10, windowSeconds: 60 });
    expect(await budget.tryAcquireUpTo(9, { reserve: 3 })).toEqual({ ok: true, taken: 7 });
    expect((await budget.tryAcquireUpTo(2, { reserve: 3 })).ok).toBe(false);
    expect(await budget.tryAcquireUpTo(5)).toEqual({ ok: true, taken: 3 });
  });

  it("remembers Cloudflare's refusal of the token for as long as asked, for every instance, without spending slots", async () => {
    const [one, other] = keySpace(2);
    const budget = new RequestBudget(one!, { requests: 5, windowSeconds: 60 });
    const seenByOther = new RequestBudget(other!, { requests: 5, windowSeconds: 60 });
    expect(await seenByOther.refusedForMs()).toBe(0);
    await budget.markRefused(300);
    expect(await seenByOther.refusedForMs()).toBeGreaterThan(200);
    expect(await seenByOther.remaining()).toBe(5);
    const until = Date.now() + 1_000;
    for (let i = 0; i < 50 && (await seenByOther.refusedForMs()) > 0 && Date.now() < until; i++) await sleep(50);
    expect(await seenByOther.refusedForMs()).toBe(0);
  });

  it('acquire waits its turn when the turn comes within the bound', async () => {
    const [redis] = keySpace();
    const budget = new RequestBudget(redis!, { requests: 2, windowSeconds: 1 });
    expect(await admittedCount(budget, 2)).toBe(2);
    const started = Date.now();
    const result = await budget.acquire({ maxWaitMs: 3_000 });
    expect(result.ok).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(800);
    expect((result as { waitedMs: number }).waitedMs).toBeGreaterThanOrEqual(800);
  });

  it('acquire gives up at once when the turn comes after the bound', async () => {
    const [redis] = keySpace();
    const budget = new RequestBudget(redis!, { requests: 1, windowSeconds: 30 });
    expect((await budget.tryAcquire()).ok).toBe(true);
    const started = Date.now();
    const result = await budget.acquire({ maxWaitMs: 1_000 });
    expect(Date.now() - started).toBeLessThan(500);
    expect(result.ok).toBe(false);
    expect((result as { retryAfterMs: number }).retryAfterMs).toBeGreaterThan(25_000);
  });

  it('waiters take turns: five waiters on a budget of two per second all go, never more than two per second', async () => {
    const [a, b] = keySpace(2);
    const budgets = [new RequestBudget(a!, { requests: 2, windowSeconds: 1 }), new RequestBudget(b!, { requests: 2, windowSeconds: 1 })];
    const results = await Promise.all(Array.from({ length: 5 }, (_, i) => budgets[i % 2]!.acquire({ maxWaitMs: 5_000 })));
    expect(results.every((r) => r.ok)).toBe(true);
    const waits = results.map((r) => (r as { waitedMs: number }).waitedMs).sort((x, y) => x - y);
    // Two go at once, two after a window, the fifth after two windows.
    expect(waits[1]).toBe(0);
    expect(waits[2]).toBeGreaterThanOrEqual(900);
    expect(waits[4]).toBeGreaterThanOrEqual(1_900);
  });

  it('acquire stops waiting when its signal aborts', async () => {
    const [redis] = keySpace();
    const budget = new RequestBudget(redis!, { requests: 1, windowSeconds: 5 });
    await budget.tryAcquire();
    const controller = new AbortController();
    const waiting = budget.acquire({ maxWaitMs: 10_000, signal: controller.signal });
    setTimeout(() => controller.abort(), 100);
    await expect(waiting).rejects.toThrow(/abort/i);
  });
});
