/**
 * Milliseconds from an arbitrary origin that only ever moves forward at the rate of real time
 * (`performance.now()`). Every elapsed time and every schedule of the agent uses it: the wall
 * clock (`Date.now()`) steps when a laptop wakes and syncs its time, and a step must neither
 * delay a heartbeat nor miscount how long a wait has lasted. `Date.now()` is for what is shown
 * to people and for comparing with the broker's timestamps only.
 */
export type MonotonicClock = () => number;

export const monotonicNow: MonotonicClock = () => performance.now();
