import { describe, expect, it } from 'vitest';
import { mapWithConcurrency } from '../../src/util/map-with-concurrency.js';

/** A promise the test settles by hand, so each call's timing is explicit rather than slept for. */
function latch<T = void>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets every already-settled continuation run. */
const drain = () => new Promise((r) => setImmediate(r));

describe('mapWithConcurrency', () => {
  it('never has more than `limit` calls in flight, and starts the next item as soon as one finishes', async () => {
    const gates = Array.from({ length: 7 }, () => latch());
    const started: number[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    const done = mapWithConcurrency(gates, 3, async (gate, index) => {
      started.push(index);
      maxInFlight = Math.max(maxInFlight, ++inFlight);
      await gate.promise;
      inFlight--;
      return index * 10;
    });

    await drain();
    expect(started).toEqual([0, 1, 2]);
    gates[1]!.resolve();
    await drain();
    expect(started).toEqual([0, 1, 2, 3]);
    for (const gate of gates) gate.resolve();

    expect(await done).toEqual([0, 10, 20, 30, 40, 50, 60]);
    expect(started.sort()).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(maxInFlight).toBe(3);
  });

  it('processes every item once, in order of the input, whatever order they finish in', async () => {
    const items = Array.from({ length: 50 }, (_, i) => i);
    const seen: number[] = [];
    const results = await mapWithConcurrency(items, 4, async (item) => {
      seen.push(item);
      // Later items of each run of four take fewer turns, so they finish first.
      for (let turn = 0; turn < 3 - (item % 4); turn++) await new Promise((r) => setImmediate(r));
      return `#${item}`;
    });
    expect(results).toEqual(items.map((i) => `#${i}`));
    expect(seen.sort((a, b) => a - b)).toEqual(items);
  });

  it('a limit above the number of items, and no items at all, are fine', async () => {
    expect(await mapWithConcurrency([1, 2], 10, async (x) => x + 1)).toEqual([2, 3]);
    expect(await mapWithConcurrency([], 3, async () => 1)).toEqual([]);
  });

  it('rejects with the first error, starts nothing after it, and waits for the calls already running', async () => {
    const slow = latch();
    const started: number[] = [];
    let slowFinished = false;
    const done = mapWithConcurrency([0, 1, 2, 3, 4], 2, async (item) => {
      started.push(item);
      if (item === 0) {
        await slow.promise;
        slowFinished = true;
      }
      if (item === 1) throw new Error('boom');
    });
    let settled = false;
    done.catch(() => {}).finally(() => {
      settled = true;
    });

    await drain();
    // Item 1 failed: nothing else starts, and the promise waits for item 0.
    expect(started).toEqual([0, 1]);
    expect(settled).toBe(false);
    slow.resolve();
    await expect(done).rejects.toThrow('boom');
    expect(slowFinished).toBe(true);
    expect(started).toEqual([0, 1]);
  });

  it('refuses a limit that is not a positive integer', async () => {
    for (const limit of [0, -1, 1.5, Number.NaN]) {
      await expect(mapWithConcurrency([1], limit, async (x) => x)).rejects.toThrow(RangeError);
    }
  });
});
