import fc from 'fast-check';
import { commandArbitraries, type ModelCommand } from './commands.js';
import { Execution } from './execution.js';
import {
  deletedAtMostOnce,
  expectedStatuses,
  heartbeatedNeverReaped,
  idempotentReplays,
  quotaMatchesLiveCount,
  type Quiescence,
  slugsReusable,
  statusSummary,
  upstreamMatchesRows,
  type Violation,
  waitForQuiescence,
} from './invariants.js';
import type { Model } from './model.js';
import { takeSnapshot } from './snapshot.js';
import type { World } from './world.js';

/**
 * The model that hunts races (issue 10): fast-check draws sequences of client operations
 * and faults, fc.asyncModelRun plays each against the World's real brokers, then the
 * sequence settles and the invariants are checked. Used by the CI test and by
 * `npm run soak`; a seed and a path replay a sequence exactly (the timing of real
 * processes, of course, only approximately).
 */

export interface ModelRunOptions {
  seed: number;
  numRuns: number;
  maxCommands: number;
  /** fast-check's path and the commands' replayPath, to replay one counterexample. */
  path?: string;
  replayPath?: string;
  /** How long a settled sequence may take to become quiescent. */
  quiescenceMs: number;
  /** Report the first failure as it is, without shrinking it. */
  endOnFailure: boolean;
  /** Epoch ms after which no sequence runs any more; shrinking stops there too (what it found so far is kept). */
  deadline?: number;
  /** Told about every sequence as it ends. */
  onSequence?: (report: SequenceReport) => void;
  /**
   * Only these invariants (ids: '1'..'7', '4r' for 4 by the reconciler, 'Q' for quiescence) fail a sequence; the others are
   * still reported. Shrinking keeps to one bug that way instead of drifting to another.
   */
  focus?: readonly string[];
}

export interface SequenceReport {
  index: number;
  commands: string;
  violations: Violation[];
  warnings: string[];
  quiescence: Quiescence;
  counts: Model['counts'];
  statuses: string;
  durationMs: number;
  /** Where the time went: cleanup before, commands, settling, quiescence, checks (probes included), in ms. */
  phases: Record<'begin' | 'commands' | 'settle' | 'quiescence' | 'checks', number>;
  /** What the sequence did, line by line (the latest lines). */
  timeline: string[];
}

export interface ModelRunResult {
  seed: number;
  failed: boolean;
  numRuns: number;
  numShrinks: number;
  /** The (shrunk, unless endOnFailure) failing sequence. */
  counterexample: string | null;
  path: string | null;
  replayPath: string | null;
  /** The failing sequence's report, or the error the harness threw. */
  failure: string | null;
  sequences: SequenceReport[];
}

/** A sequence broke invariants: the message is the readable report. */
export class ModelFailure extends Error {
  constructor(readonly report: SequenceReport, text: string) {
    super(text);
    this.name = 'ModelFailure';
  }
}

export async function runModel(world: World, options: ModelRunOptions): Promise<ModelRunResult> {
  const sequences: SequenceReport[] = [];
  const property = fc.asyncProperty(
    fc.commands(commandArbitraries(), { maxCommands: options.maxCommands, ...(options.replayPath ? { replayPath: options.replayPath } : {}) }),
    async (cmds) => {
      // Time is up: pass without running, which also ends shrinking with the smallest failure found.
      if (options.deadline !== undefined && Date.now() > options.deadline) return;
      const report = await runSequence(world, world.nextSequence(), cmds, options);
      sequences.push(report);
      options.onSequence?.(report);
      const failing = options.focus ? report.violations.filter((v) => options.focus!.includes(v.id)) : report.violations;
      if (failing.length > 0) throw new ModelFailure(report, formatReport(report));
    },
  );
  const details = await fc.check(property, {
    seed: options.seed,
    numRuns: options.numRuns,
    endOnFailure: options.endOnFailure,
    ...(options.path ? { path: options.path } : {}),
  });
  const counterexample = details.counterexample ? String(details.counterexample[0]) : null;
  const failure = details.errorInstance instanceof Error ? details.errorInstance.message : details.errorInstance === null ? null : String(details.errorInstance);
  return {
    seed: details.seed,
    failed: details.failed,
    numRuns: details.numRuns,
    numShrinks: details.numShrinks,
    counterexample,
    path: details.counterexamplePath,
    replayPath: counterexample ? (/\/\*replayPath="([^"]*)"\*\//.exec(counterexample)?.[1] ?? null) : null,
    failure,
    sequences,
  };
}

async function runSequence(world: World, index: number, cmds: Iterable<ModelCommand>, options: ModelRunOptions): Promise<SequenceReport> {
  const started = Date.now();
  let mark = started;
  const lap = () => {
    const now = Date.now();
    const ms = now - mark;
    mark = now;
    return ms;
  };
  // The heartbeat loop's bound: a sequence, its quiescence and its probes take minutes at most.
  const x = await Execution.begin(world, index, { maxSeconds: 600 });
  try {
    const begin = lap();
    await fc.asyncModelRun(() => ({ model: x.model, real: x }), cmds);
    const commands = lap();
    await x.settle();
    const settle = lap();
    const quiescence = await waitForQuiescence(x, options.quiescenceMs);
    const quiescenceMs = lap();
    const s = await takeSnapshot(x);
    const violations: Violation[] = [];
    const add = (id: string, invariant: string, lines: string[]) => {
      if (lines.length > 0) violations.push({ id, invariant, lines });
    };
    if (!quiescence.reached) add('Q', `quiescence not reached in ${options.quiescenceMs / 1000} s`, quiescence.pending);
    add('1', '1 upstream holds exactly the live rows\' tunnels and DNS records', upstreamMatchesRows(s));
    const deletions = deletedAtMostOnce(s, x.model);
    add('4', '4 each upstream object deleted once, never again for nothing', deletions.lines);
    add('4r', '4 each upstream object deleted once, never again for nothing: by the reconciler', deletions.byReconciler);
    const heartbeats = heartbeatedNeverReaped(s, x.model);
    add('6', '6 a tunnel heartbeated to the end is never reaped', heartbeats.lines);
    add('7', '7 an Idempotency-Key replays its first 201', idempotentReplays(x.model));
    add('3', '3 the quota counts exactly the live tunnels', await quotaMatchesLiveCount(x, s));
    add('2', '2 every ended tunnel\'s slug can be taken again', await slugsReusable(x, s));
    add('5', '5 no 500, no undocumented status', expectedStatuses(x.model.records));
    return {
      index,
      commands: String(cmds),
      violations,
      warnings: [...x.preamble, ...heartbeats.warnings],
      quiescence,
      counts: { ...x.model.counts },
      statuses: statusSummary(x.model.records),
      durationMs: Date.now() - started,
      phases: { begin, commands, settle, quiescence: quiescenceMs, checks: lap() },
      timeline: [...x.model.timeline],
    };
  } finally {
    await x.end();
  }
}

/** The readable report of one sequence: what broke, then what happened. */
export function formatReport(report: SequenceReport): string {
  const out: string[] = [
    `sequence ${report.index}: ${report.violations.length} invariant(s) broken (${(report.durationMs / 1000).toFixed(1)} s: ${formatPhases(report)}; quiescence ${report.quiescence.reached ? 'reached' : 'NOT reached'})`,
    `commands: ${report.commands}`,
  ];
  for (const v of report.violations) {
    out.push(`[${v.invariant}]`, ...v.lines.slice(0, 30).map((l) => `  ${l}`));
    if (v.lines.length > 30) out.push(`  ... and ${v.lines.length - 30} more`);
  }
  if (report.warnings.length > 0) out.push('warnings:', ...report.warnings.map((w) => `  ${w}`));
  out.push(`statuses: ${report.statuses}`);
  out.push('timeline:', ...report.timeline.slice(-80).map((l) => `  ${l}`));
  return out.join('\n');
}

export function formatPhases(report: SequenceReport): string {
  return Object.entries(report.phases).map(([phase, ms]) => `${phase} ${(ms / 1000).toFixed(1)}`).join(', ');
}
