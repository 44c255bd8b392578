/**
 * Summarises a V8 .cpuprofile (from `node --cpu-prof`) into its heaviest frames, by
 * self time, and by package/file: enough to say where a hot path spends its CPU.
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface FrameCost {
  name: string;
  selfPct: number;
}

export interface ProfileSummary {
  /** Wall time covered by the samples counted, ms. */
  durationMs: number;
  /** Share of samples where the thread was idle (waiting for I/O). */
  idlePct: number;
  topFrames: FrameCost[];
  /** Self time grouped by where the code lives: a package, node internals, or a file of this repo. */
  topModules: FrameCost[];
}

/** Where a frame's code lives: `pkg:<name>`, `node:<internal>`, `src/<file>`, `(native)` or `(program)`. */
export function moduleOf(frame: CallFrame): string {
  const url = frame.url;
  if (!url) {
    if (frame.functionName === '(garbage collector)') return '(gc)';
    if (frame.functionName === '(program)' || frame.functionName === '(idle)') return frame.functionName;
    return '(native)';
  }
  const nm = url.lastIndexOf('node_modules/');
  if (nm !== -1) {
    const rest = url.slice(nm + 'node_modules/'.length).split('/');
    return `pkg:${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  if (url.startsWith('node:')) return url;
  const src = url.indexOf('/src/');
  if (src !== -1) return url.slice(src + 1);
  const bench = url.indexOf('/bench/');
  if (bench !== -1) return url.slice(bench + 1);
  return url;
}

function frameName(frame: CallFrame): string {
  const fn = frame.functionName || '(anonymous)';
  const where = moduleOf(frame);
  return where.startsWith('(') ? fn : `${fn} ${where}:${frame.lineNumber + 1}`;
}

/**
 * `skipMs`: ignore the first milliseconds of the profile (start-up: module loading and
 * compilation), so what remains is the work the benchmark drove.
 */
export function summariseProfile(profile: CpuProfile, options: { top?: number; skipMs?: number } = {}): ProfileSummary {
  const top = options.top ?? 15;
  const skipUs = (options.skipMs ?? 0) * 1000;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  // Self samples per node: from the samples array when present (exact, and datable), else hitCount.
  const hits = new Map<number, number>();
  let firstCountedUs = profile.startTime;
  if (profile.samples && profile.samples.length > 0) {
    let t = profile.startTime;
    let first = true;
    for (let i = 0; i < profile.samples.length; i++) {
      t += profile.timeDeltas?.[i] ?? 0;
      if (t - profile.startTime < skipUs) continue;
      if (first) {
        firstCountedUs = t;
        first = false;
      }
      const id = profile.samples[i]!;
      hits.set(id, (hits.get(id) ?? 0) + 1);
    }
  } else {
    for (const n of profile.nodes) hits.set(n.id, n.hitCount ?? 0);
  }
  let total = 0;
  let idle = 0;
  const frames = new Map<string, number>();
  const modules = new Map<string, number>();
  for (const [id, count] of hits) {
    const node = byId.get(id);
    if (!node) continue;
    total += count;
    if (node.callFrame.functionName === '(idle)') {
      idle += count;
      continue;
    }
    const name = frameName(node.callFrame);
    frames.set(name, (frames.get(name) ?? 0) + count);
    const mod = moduleOf(node.callFrame);
    modules.set(mod, (modules.get(mod) ?? 0) + count);
  }
  const busy = Math.max(1, total - idle);
  const rank = (m: Map<string, number>) =>
    [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, n]) => ({ name, selfPct: (100 * n) / busy }));
  return {
    durationMs: (profile.endTime - firstCountedUs) / 1000,
    idlePct: total === 0 ? 0 : (100 * idle) / total,
    topFrames: rank(frames),
    topModules: rank(modules),
  };
}

export function readProfile(path: string): CpuProfile {
  return JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
}
