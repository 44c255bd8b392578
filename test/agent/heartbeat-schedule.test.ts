import { afterEach, describe, expect, it, vi } from 'vitest';
import { HeartbeatSchedule } from '../../packages/agent/src/heartbeat-schedule.js';

const PERIOD_MS = 20_000;
// random() = 0.5 puts the ±10 % jitter in the middle: exactly the period.
const MIDDLE = () => 0.5;

describe('HeartbeatSchedule', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('keeps a fixed rate from send to send on the clock it is given', () => {
    let now = 1_000;
    const schedule = new HeartbeatSchedule(() => now);
    expect(schedule.delayUntilNext(PERIOD_MS, MIDDLE)).toBe(PERIOD_MS);
    // A slow answer (or a late wake-up) comes off the next wait rather than pushing every later heartbeat back.
    now += 3_000;
    expect(schedule.delayUntilNext(PERIOD_MS, MIDDLE)).toBe(PERIOD_MS - 3_000);
    now += 30_000;
    expect(schedule.delayUntilNext(PERIOD_MS, MIDDLE)).toBe(0);
    schedule.markSent();
    expect(schedule.delayUntilNext(PERIOD_MS, MIDDLE)).toBe(PERIOD_MS);
    // The jitter stays within ±10 %.
    expect(schedule.delayUntilNext(PERIOD_MS, () => 0)).toBe(18_000);
    expect(schedule.delayUntilNext(PERIOD_MS, () => 1)).toBe(22_000);
  });

  it('is not moved by the wall clock: a step after sleep neither delays the next heartbeat nor fires it early', () => {
    let now = 50_000;
    const schedule = new HeartbeatSchedule(() => now);
    now += 4_000;
    vi.useFakeTimers({ toFake: ['Date'] });
    for (const step of [3_600_000, -3_600_000]) {
      vi.setSystemTime(Date.now() + step);
      expect(schedule.delayUntilNext(PERIOD_MS, MIDDLE)).toBe(PERIOD_MS - 4_000);
      expect(schedule.sinceLastSent()).toBe(4_000);
    }
  });

  it('uses the monotonic clock by default, not Date.now()', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const schedule = new HeartbeatSchedule();
    // An hour forward, then two hours back: with Date.now() the next heartbeat would be due at once, then in an hour.
    for (const step of [3_600_000, -7_200_000]) {
      vi.setSystemTime(Date.now() + step);
      const delay = schedule.delayUntilNext(PERIOD_MS, MIDDLE);
      // Only the few real milliseconds this test takes have passed.
      expect(delay).toBeLessThanOrEqual(PERIOD_MS);
      expect(delay).toBeGreaterThan(PERIOD_MS - 1_000);
    }
  });
});
