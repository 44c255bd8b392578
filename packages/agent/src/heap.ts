import { setFlagsFromString } from 'node:v8';

/**
 * V8 sizes its young generation by the machine's memory: on a large machine it grows to
 * 64 MB and more under a burst of requests through the inspector's proxy, and the RSS stays
 * there. The agent allocates little that lives long, so it keeps the young generation at
 * its starting size. Set at run time (a flag on the command line would need the shebang):
 * V8 honours the growth factor set now; the maximum alone it reads only at start-up.
 *
 * `--optimize-for-size` (also honoured at run time) makes V8 grow the old generation less
 * between full collections and keep less optimised code: after sustained load through the
 * proxy the agent's RSS went from ~128 to ~104 MiB (bench/notes.md section 5), with no
 * measurable change in the latency the proxy adds.
 */
export function limitYoungGeneration(): void {
  setFlagsFromString('--semi-space-growth-factor=1');
  setFlagsFromString('--optimize-for-size');
}
