/**
 * npm run soak -- [--seed N] [--minutes M] [--max-commands K] [--no-shrink] [--log-level L]
 *                 [--seed N --path P [--replay-path R] [--no-shrink]]   (replay one counterexample, and shrink it)
 *                 [--focus 4,Q]   (only these invariants fail a sequence: shrinking keeps to that bug)
 *                 [--redis single|cluster]   (the brokers' Redis: one node, or a 3-primary Redis Cluster)
 *
 * Runs the tunnel model (test/model/harness.ts, the same harness as the CI test) against
 * two real broker processes until the time is up: sequence after sequence from one seed,
 * then, after a failure has been shrunk, from the next seed. Prints the seed first (a
 * random one when none is given) and at the end a summary: sequences, commands, faults
 * injected, and each failure with its seed and fast-check path for replay.
 * Starts an embedded PostgreSQL and a private Redis as `npm test` does (or uses
 * TEST_DATABASE_URL / TEST_REDIS_URL).
 */
import { parseArgs } from 'node:util';
import { startTestServices } from '../test/helpers/test-services.js';

// The test helpers read the services from the environment outside vitest, so they are set
// before the harness (and the helpers it imports) load.
const services = await startTestServices(process.env);
process.env.TEST_DATABASE_URL = services.databaseServerUrl;
process.env.TEST_REDIS_URL = services.redisUrl;
process.env.TEST_REDIS_CLUSTER_NODES = services.redisClusterNodes;
console.log(`soak: ${services.describe}`);
const { formatPhases, runModel } = await import('../test/model/harness.js');
const { World } = await import('../test/model/world.js');
const { useRedisTopologyForFile } = await import('../test/helpers/redis-keys.js');
type ModelRunResult = import('../test/model/harness.js').ModelRunResult;
type SequenceReport = import('../test/model/harness.js').SequenceReport;

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    minutes: { type: 'string', default: '10' },
    'max-commands': { type: 'string', default: '15' },
    'quiescence-seconds': { type: 'string', default: '30' },
    'no-shrink': { type: 'boolean', default: false },
    path: { type: 'string' },
    'replay-path': { type: 'string' },
    'log-level': { type: 'string', default: 'info' },
    focus: { type: 'string' },
    redis: { type: 'string', default: 'single' },
  },
  strict: true,
});

const positiveInt = (name: string, raw: string): number => {
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number (got ${raw})`);
  return n;
};
// The harness waits for each broker's "ready" line, which is logged at info.
if (!['info', 'debug', 'trace'].includes(values['log-level']!)) throw new Error(`--log-level must be info, debug or trace (got ${values['log-level']}): the harness reads each broker's info-level "ready" line`);
if (values.redis !== 'single' && values.redis !== 'cluster') throw new Error(`--redis must be single or cluster (got ${values.redis})`);
useRedisTopologyForFile(values.redis);
const minutes = positiveInt('minutes', values.minutes!);
const maxCommands = Math.round(positiveInt('max-commands', values['max-commands']!));
const quiescenceMs = positiveInt('quiescence-seconds', values['quiescence-seconds']!) * 1000;
const firstSeed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Math.round(Number(values.seed));
if (!Number.isInteger(firstSeed)) throw new Error(`--seed must be an integer (got ${values.seed})`);
const replay = values.path !== undefined;

console.log(replay
  ? `soak: replaying seed ${firstSeed} path ${values.path}${values['replay-path'] ? ` replayPath ${values['replay-path']}` : ''}`
  : `soak: seed ${firstSeed}, ${values.redis} Redis, ${minutes} min, up to ${maxCommands} commands per sequence${values['no-shrink'] ? ', no shrinking' : ''}`);

const totals = { sequences: 0, commands: 0, faults: 0, kills: 0, flushes: 0, warnings: 0 };
const onSequence = (r: SequenceReport) => {
  totals.sequences++;
  totals.commands += r.counts.commands;
  totals.faults += r.counts.faults;
  totals.kills += r.counts.kills;
  totals.flushes += r.counts.flushes;
  totals.warnings += r.warnings.length;
  const verdict = r.violations.length === 0 ? 'ok' : `broken: ${r.violations.map((v) => v.invariant).join('; ')}`;
  console.log(`  sequence ${r.index}: ${r.counts.commands} commands, ${(r.durationMs / 1000).toFixed(1)} s (${formatPhases(r)}), ${verdict}`);
  for (const w of r.warnings) console.log(`    warning: ${w}`);
};

const world = await World.start({ logLevel: values['log-level']! });
const deadline = Date.now() + minutes * 60_000;
const failures: ModelRunResult[] = [];
let exitCode = 0;
try {
  // Each seed runs until it fails (then shrinks until the deadline) or the time is up; bounded by count too.
  for (let round = 0, seed = firstSeed; round < 10_000 && Date.now() < deadline; round++, seed++) {
    const result = await runModel(world, {
      seed,
      numRuns: replay ? 1 : 100_000,
      maxCommands,
      quiescenceMs,
      endOnFailure: values['no-shrink']!,
      deadline,
      onSequence,
      ...(values.focus ? { focus: values.focus.split(',').map((f) => f.trim()) } : {}),
      ...(replay ? { path: values.path!, ...(values['replay-path'] ? { replayPath: values['replay-path'] } : {}) } : {}),
    });
    if (result.failed) failures.push(result);
    if (replay) break;
  }
} catch (error) {
  console.error('soak: the harness failed:', error);
  exitCode = 2;
} finally {
  await world.close();
  await services.stop();
}

console.log('\n==== soak summary ====');
console.log(`seed ${firstSeed}; ${totals.sequences} sequences, ${totals.commands} commands, ${totals.faults} Cloudflare faults, ${totals.kills} broker kills, ${totals.flushes} Redis flushes, ${totals.warnings} warnings`);
if (failures.length === 0) console.log('no failure');
for (const f of failures) {
  console.log(`\nFAILURE seed ${f.seed} path ${f.path}${f.replayPath ? ` replayPath ${f.replayPath}` : ''} (${f.numShrinks} shrinks)`);
  console.log(`replay: npm run soak -- --seed ${f.seed} --path '${f.path}'${f.replayPath ? ` --replay-path '${f.replayPath}'` : ''}`);
  console.log(`counterexample: ${f.counterexample}`);
  console.log(f.failure ?? '(no report)');
}
process.exit(exitCode || (failures.length > 0 ? 1 : 0));
