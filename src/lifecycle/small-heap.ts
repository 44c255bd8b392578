import { setFlagsFromString } from 'node:v8';

/**
 * V8 heap settings of the broker's own process (issue 14: idle RSS < 120 MB, and heartbeat
 * throughput at least 0.8 of the floor).
 *
 * Loading the broker's modules is a burst of allocation: with V8's defaults it grows the young
 * generation to 2 × 32 MB on this machine, which then stays committed while the broker idles,
 * though almost nothing in it lives. So the process starts with `--optimize-for-size` (V8 keeps
 * the young generation small and collects the old one sooner), set here at run time because
 * src/server.ts imports this module before any other, and `node dist/server.js` needs no flags.
 *
 * Once the broker is ready, `optimizeForSpeed` turns it off again: under heartbeat load
 * `--optimize-for-size` cost ~50 % more CPU per heartbeat (more scavenges, less optimised code;
 * bench/notes.md). The young generation may then grow under load, as it would by default.
 */
export function optimizeForSize(): void {
  setFlagsFromString('--optimize-for-size');
}

export function optimizeForSpeed(): void {
  setFlagsFromString('--no-optimize-for-size');
}

// Imported first by src/server.ts, so this runs before the other modules load.
optimizeForSize();
