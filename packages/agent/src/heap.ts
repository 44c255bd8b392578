import { setFlagsFromString } from 'node:v8';

/**
 * V8 sizes its young generation by the machine's memory: on a large machine it grows to
 * 64 MB and more under a burst of requests through the inspector's proxy, and the RSS stays
 * there. The agent allocates little that lives long, so it keeps the young generation at
 * its starting size. Set at run time (a flag on the command line would need the shebang):
 * V8 honours the growth factor set now; the maximum alone it reads only at start-up.
 */
export function limitYoungGeneration(): void {
  setFlagsFromString('--semi-space-growth-factor=1');
}
