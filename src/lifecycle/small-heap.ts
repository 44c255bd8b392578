import { setFlagsFromString } from 'node:v8';

/**
 * Keeps the broker's V8 heap near what it uses (issue 14: idle RSS < 120 MB).
 *
 * - V8 sizes the young generation by the machine's memory and grows it under load (to 2 × 32
 *   MB here) and never gives it back, though a heartbeat or a create leaves almost nothing
 *   alive. A growth factor of 1 keeps it at its starting size. Only the factor is honoured
 *   when set at run time (the maximum is read at start-up), and setting it here means
 *   `node dist/server.js` needs no flags.
 * - `--optimize-for-size` makes V8 grow the old generation less between full collections and
 *   keep less optimised code (also honoured at run time).
 *
 * Only the broker's own process does this (src/server.ts imports this module first); tests and
 * tools that build the app keep V8's defaults. The heartbeat throughput and create latency with both set are in bench/notes.md.
 */
export function keepHeapSmall(): void {
  setFlagsFromString('--semi-space-growth-factor=1');
  setFlagsFromString('--optimize-for-size');
}

// Imported first by src/server.ts, so this runs before the other modules load: loading them
// is itself a burst of allocation that would grow the young generation for good.
keepHeapSmall();
