import { describe, expect, it } from 'vitest';
import { retryAfterDelay } from '../../packages/agent/src/backoff.js';

describe('retryAfterDelay', () => {
  it('never waits less than Retry-After, and adds at most 250 ms of jitter', () => {
    for (const random of [() => 0, () => 0.5, () => 0.999]) {
      for (const retryAfterSec of [0, 1, 7]) {
        const delay = retryAfterDelay(retryAfterSec, 0, random);
        expect(delay).toBeGreaterThanOrEqual(retryAfterSec * 1000);
        expect(delay).toBeLessThanOrEqual(retryAfterSec * 1000 + 250);
      }
    }
  });

  it("waits for the caller's floor when that is longer than Retry-After, or when there is none", () => {
    expect(retryAfterDelay(1, 4_000, () => 0)).toBe(4_000);
    expect(retryAfterDelay(undefined, 1_500, () => 0)).toBe(1_500);
    expect(retryAfterDelay(5, 1_500, () => 0)).toBe(5_000);
  });
});
