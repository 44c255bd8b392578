/**
 * `npm run bench -- --only=soak` (outside `npm test`): the broker at fleet scale on this
 * machine. 100,000 live tunnels heartbeated at 5,000 requests a second (each tunnel every
 * 20 s, as agents do) through two broker processes on a 3-primary Redis Cluster, while
 * silent tunnels come due at 100 a second and the two brokers' reapers end them, for at
 * least two minutes.
 *
 * Recorded: heartbeat latency (p50, p99), answers other than 2xx (budget: none), false reaps
 * (a heartbeated tunnel ended: budget none), and whether the reapers kept up (every silent
 * tunnel due before the end of the load ended; its lateness past its deadline, p50/p99/max).
 */
import autocannon from 'autocannon';
import type { CloudflareEmulator } from '../src/cloudflare/emulator/emulator.js';
import { insertTunnels, makeTunnels, markEpoch, seedLiveState, seedUpstream, setDeadlines, type SeedTunnel } from './lib/seed.js';
import { createBenchDatabase, type ServerProcess, withPg } from './lib/services.js';
import { fmt, markdownTable, percentile, type Verdict } from './lib/stats.js';
import { bearerHeaders } from './lib/tokens.js';

export const SOAK_HEADING = '## 7. Soak at scale';

export const SOAK = {
  live: 100_000,
  users: 20_000,
  heartbeatsPerSecond: 5_000,
  expiriesPerSecond: 100,
  loadSeconds: 130,
  /** Silent tunnels start coming due this long into the load, and stop this long before its end. */
  expiryLeadSeconds: 15,
  expiryTailSeconds: 15,
  ttlSeconds: 60,
  connectionsPerBroker: 48,
  /**
   * autocannon paces each connection with its own timer and drops a slot a late answer
   * missed, so it delivers ~80 % of the rate it is asked for on this machine: it is asked for
   * this much more, and the verdict is on the rate achieved.
   */
  rateHeadroom: 1.3,
  brokers: 2,
  /** After the load, how long the reapers get to finish what came due during it. */
  catchUpMs: 20_000,
};

const QUICK_SOAK = { ...SOAK, live: 10_000, heartbeatsPerSecond: 500, expiriesPerSecond: 20, loadSeconds: 40, expiryLeadSeconds: 5, expiryTailSeconds: 5 };

export interface SoakDeps {
  log(message: string): void;
  secret: string;
  emulator: CloudflareEmulator;
  pgServerUrl: string;
  /** REDIS_CLUSTER_NODES of the run's cluster. */
  clusterNodes: string;
  tunnelNamePrefix: string;
  domain: string;
  /** Starts a broker (BROKER_ROLE=all) on this database and key prefix, with these extra variables. */
  startBroker(name: string, o: { databaseUrl: string; prefix: string; extra: Record<string, string> }): Promise<ServerProcess>;
  defer(what: string, fn: () => Promise<unknown>): void;
  quick: boolean;
}

export interface SoakResult {
  settings: typeof SOAK;
  seconds: number;
  requests: number;
  rps: number;
  p50: number;
  p99: number;
  max: number;
  non2xx: number;
  errors: number;
  /** Heartbeated tunnels ended within a TTL of a 2xx heartbeat: reaped although alive. */
  falseReaps: number;
  /** Live tunnels the load itself failed to heartbeat within a TTL (a slow machine), and so rightly reaped. */
  lapsed: number;
  due: number;
  reapedInTime: number;
  lateness: { p50: number; p99: number; max: number };
  brokerCpuPercent: number[];
  brokerRss: number[];
  verdict: Verdict;
}

export async function soakSection(deps: SoakDeps): Promise<SoakResult> {
  const s = deps.quick ? QUICK_SOAK : SOAK;
  const { log } = deps;
  // Loaded here: the test helpers read the run's services from the environment bench/run.ts sets first.
  const { deleteKeysUnderPrefix, testRedisClient } = await import('../test/helpers/redis-keys.js');
  const db = await createBenchDatabase(deps.pgServerUrl, 'soak');
  deps.defer(`drop ${db.name}`, () => db.drop());
  const prefix = `bench:soak:${Date.now()}:`;
  // The run's cluster (bench/run.ts puts it in TEST_REDIS_CLUSTER_NODES), as the tests reach it.
  const redis = testRedisClient('cluster', prefix);
  const admin = testRedisClient('cluster');
  deps.defer('disconnect cluster clients', async () => {
    redis.disconnect();
    admin.disconnect();
  });
  deps.defer(`delete cluster keys ${prefix}*`, () => deleteKeysUnderPrefix(admin, prefix));

  const expiryWindow = s.loadSeconds - s.expiryLeadSeconds - s.expiryTailSeconds;
  const silentCount = s.expiriesPerSecond * expiryWindow;
  log(`soak: seeding ${fmt(s.live)} live tunnels and ${fmt(silentCount)} silent ones (real tunnels and DNS records upstream)`);
  const live = makeTunnels(s.live, { users: s.users, domain: deps.domain, slugPrefix: 'soak-live-', userPrefix: 'soak-user-' });
  const silent = makeTunnels(silentCount, { users: Math.ceil(silentCount / 5), domain: deps.domain, slugPrefix: 'soak-silent-', userPrefix: 'soak-silent-user-' });
  await seedUpstream({ url: deps.emulator.url, apiToken: deps.emulator.apiToken, accountId: deps.emulator.accountId, zoneId: deps.emulator.zoneId, tunnelNamePrefix: deps.tunnelNamePrefix }, silent);
  await withPg(db.url, async (c) => {
    await insertTunnels(c, live);
    await insertTunnels(c, silent);
    await c.query('ANALYZE');
  });
  // The live tunnels' first deadline leaves room for start-up and the first 20 s pass of heartbeats.
  await seedLiveState(redis, live, s.ttlSeconds * 1000, Date.now() + 60_000);
  await seedLiveState(redis, silent, 3_600_000);
  await markEpoch(redis);
  const { headers: auth } = await bearerHeaders(deps.secret, live, 'heartbeat');

  log(`soak: starting ${s.brokers} brokers on the Redis Cluster`);
  const brokers: ServerProcess[] = [];
  for (let i = 0; i < s.brokers; i++) {
    brokers.push(await deps.startBroker(`broker-soak-${i}`, {
      databaseUrl: db.url,
      prefix,
      extra: { REDIS_CLUSTER_NODES: deps.clusterNodes, TUNNEL_TTL_SECONDS: String(s.ttlSeconds), REAPER_INTERVAL_SECONDS: '1', RECONCILE_INTERVAL_SECONDS: '86400' },
    }));
  }

  // Silent tunnels come due at expiriesPerSecond, spread evenly, from expiryLeadSeconds in.
  const loadStart = Date.now() + 1_000;
  const dueAt = new Map<string, number>();
  const step = 1000 / s.expiriesPerSecond;
  const firstDue = loadStart + s.expiryLeadSeconds * 1000;
  for (let i = 0; i < silent.length; i += s.expiriesPerSecond / 10) {
    const chunk = silent.slice(i, i + s.expiriesPerSecond / 10);
    const at = Math.round(firstDue + i * step);
    for (const t of chunk) dueAt.set(t.id, at);
    await setDeadlines(redis, chunk.map((t) => t.id), at);
  }
  await new Promise((r) => setTimeout(r, Math.max(0, loadStart - Date.now())));

  log(`soak: ${fmt(s.heartbeatsPerSecond)} heartbeats/s over ${fmt(s.live)} tunnels for ${s.loadSeconds} s, ${fmt(s.expiriesPerSecond)} expiries/s`);
  // When each live tunnel last had a heartbeat answered 2xx: a tunnel ended within a TTL of
  // one was reaped falsely; one ended later lapsed because the load did not reach it in time.
  const lastOk = new Float64Array(live.length);
  const cpuBefore = brokers.map((b) => b.cpuMs());
  const started = Date.now();
  const results = await Promise.all(brokers.map((broker, b) => {
    // Broker b heartbeats tunnels b, b + brokers, …: each tunnel every live / rate seconds.
    let next = b;
    return autocannon({
      url: broker.baseUrl,
      connections: s.connectionsPerBroker,
      overallRate: (s.heartbeatsPerSecond * s.rateHeadroom) / s.brokers,
      duration: s.loadSeconds,
      timeout: 10,
      requests: [{
        method: 'POST',
        setupRequest: (request, context) => {
          const i = next % live.length;
          next += s.brokers;
          context.tunnel = i;
          return { ...request, method: 'POST', path: `/v1/tunnels/${live[i]!.id}/heartbeat`, headers: { authorization: auth[i]! } };
        },
        onResponse: (status, _body, context) => {
          if (status >= 200 && status < 300) lastOk[context.tunnel as number] = Date.now();
        },
      }],
    });
  }));
  const seconds = (Date.now() - started) / 1000;
  const brokerCpuPercent = brokers.map((b, i) => ((b.cpuMs() - cpuBefore[i]!) / (seconds * 1000)) * 100);
  const brokerRss = brokers.map((b) => b.rss());

  // What came due during the load gets catchUpMs more to be ended.
  const dueBy = Date.now();
  log(`soak: load done; giving the reapers ${s.catchUpMs / 1000} s to finish what came due`);
  const expected = silent.filter((t) => dueAt.get(t.id)! <= dueBy);
  const waitUntil = Date.now() + s.catchUpMs;
  let ended: Array<{ id: string; ended_at: Date }> = [];
  for (let round = 0; round < 100 && Date.now() < waitUntil; round++) {
    ended = await withPg(db.url, async (c) => (await c.query<{ id: string; ended_at: Date }>("SELECT id::text, ended_at FROM tunnels WHERE status = 'ended' AND slug LIKE 'soak-silent-%'")).rows);
    if (ended.length >= expected.length) break;
    await new Promise((r) => setTimeout(r, 1_000));
  }
  const liveIndex = new Map(live.map((t, i) => [t.id, i]));
  const liveEnded = await withPg(db.url, async (c) => (await c.query<{ id: string; ended_at: Date | null }>("SELECT id::text, ended_at FROM tunnels WHERE status <> 'active' AND slug LIKE 'soak-live-%'")).rows);
  const heardWithinTtl = (r: { id: string; ended_at: Date | null }) => (r.ended_at?.getTime() ?? Date.now()) - lastOk[liveIndex.get(r.id)!]! < s.ttlSeconds * 1000;
  const falseReaps = liveEnded.filter(heardWithinTtl).length;
  const lapsed = liveEnded.length - falseReaps;
  const endedAt = new Map(ended.map((r) => [r.id, r.ended_at.getTime()]));
  const lateness = expected.filter((t) => endedAt.has(t.id)).map((t) => endedAt.get(t.id)! - dueAt.get(t.id)!);
  for (const broker of brokers) await broker.stop();

  const requests = results.reduce((n, r) => n + r.requests.total, 0);
  const non2xx = results.reduce((n, r) => n + r.non2xx, 0);
  const errors = results.reduce((n, r) => n + r.errors + r.timeouts, 0);
  const reapedInTime = lateness.length;
  const result: SoakResult = {
    settings: s,
    seconds,
    requests,
    rps: requests / seconds,
    // The brokers' latencies pooled: the larger of the two percentiles (autocannon keeps no raw samples across instances).
    p50: Math.max(...results.map((r) => r.latency.p50)),
    p99: Math.max(...results.map((r) => r.latency.p99)),
    max: Math.max(...results.map((r) => r.latency.max)),
    non2xx,
    errors,
    falseReaps,
    lapsed,
    due: expected.length,
    reapedInTime,
    lateness: { p50: percentile(lateness, 50), p99: percentile(lateness, 99), max: lateness.length > 0 ? Math.max(...lateness) : Number.NaN },
    brokerCpuPercent,
    brokerRss,
    verdict: 'FAIL',
  };
  const keptUp = reapedInTime === expected.length && result.lateness.p99 < 5_000;
  const rateHeld = result.rps >= s.heartbeatsPerSecond * 0.95;
  result.verdict = non2xx === 0 && errors === 0 && falseReaps === 0 && lapsed === 0 && keptUp && rateHeld ? 'PASS' : 'FAIL';
  log(`soak: ${fmt(result.rps)} heartbeats/s, p50 ${result.p50} ms, p99 ${result.p99} ms, non-2xx ${non2xx}, errors ${errors}, false reaps ${falseReaps}, lapsed ${lapsed}, reaped ${reapedInTime}/${expected.length} (lateness p99 ${fmt(result.lateness.p99)} ms), ${result.verdict}`);
  return result;
}

export function soakSummaryRows(r: SoakResult): string[][] {
  return [
    ['7. soak', `${fmt(r.settings.live)} live, ${fmt(r.settings.heartbeatsPerSecond)} heartbeats/s target, 2 brokers, Redis Cluster`, `${fmt(r.rps)} req/s · p50 ${r.p50} ms · p99 ${r.p99} ms · non-2xx ${r.non2xx} · errors ${r.errors}`, 'no non-2xx; rate held', r.non2xx === 0 && r.errors === 0 && r.rps >= r.settings.heartbeatsPerSecond * 0.95 ? 'PASS' : 'FAIL'],
    ['7. soak', `reaping ${fmt(r.settings.expiriesPerSecond)} expiries/s`, `${fmt(r.reapedInTime)}/${fmt(r.due)} ended · lateness p50 ${fmt(r.lateness.p50)} ms · p99 ${fmt(r.lateness.p99)} ms · max ${fmt(r.lateness.max)} ms · false reaps ${r.falseReaps} · lapsed ${r.lapsed}`, 'all ended, p99 < 5 s; no false reap', r.reapedInTime === r.due && r.lateness.p99 < 5_000 && r.falseReaps === 0 ? 'PASS' : 'FAIL'],
  ];
}

export function renderSoakSection(r: SoakResult, date: string): string {
  const s = r.settings;
  return [
    SOAK_HEADING,
    '',
    `\`npx tsx bench/run.ts --only=soak\` on ${date}: ${fmt(s.live)} live tunnels of ${fmt(s.users)} users, heartbeated by autocannon at ${fmt(s.heartbeatsPerSecond)} requests/s in all (each tunnel every ${fmt(s.live / s.heartbeatsPerSecond)} s with its own heartbeat token, ${s.connectionsPerBroker} connections per broker) through ${s.brokers} broker processes (BROKER_ROLE=all, LOG_LEVEL=info, metrics on, reaper sweeping every second) on a 3-primary Redis Cluster of the machine's redis-server and the embedded PostgreSQL, for ${fmt(r.seconds)} s. Meanwhile ${fmt(s.expiriesPerSecond)} silent tunnels a second (real tunnels and DNS records in the emulator) came due, from ${s.expiryLeadSeconds} s in to ${s.expiryTailSeconds} s before the end; the reapers then had ${s.catchUpMs / 1000} s more. Everything (autocannon, the emulator, two brokers, three Redis primaries, PostgreSQL) shares the machine's 2 cores.`,
    '',
    markdownTable(['measure', 'result'], [
      ['heartbeats answered', `${fmt(r.requests)} in ${fmt(r.seconds)} s = ${fmt(r.rps)} req/s`],
      ['latency p50 · p99 · max (per broker, the larger)', `${r.p50} ms · ${r.p99} ms · ${r.max} ms`],
      ['non-2xx · errors and timeouts', `${r.non2xx} · ${r.errors}`],
      ['false reaps (ended within a TTL of a 2xx heartbeat) · lapsed (the load missed them for a TTL)', `${r.falseReaps} · ${r.lapsed}`],
      ['silent tunnels due during the load · ended', `${fmt(r.due)} · ${fmt(r.reapedInTime)}`],
      ['reap lateness past the deadline p50 · p99 · max', `${fmt(r.lateness.p50)} ms · ${fmt(r.lateness.p99)} ms · ${fmt(r.lateness.max)} ms`],
      ['broker CPU (each, % of one core) · RSS', `${r.brokerCpuPercent.map((c) => fmt(c)).join(' / ')} % · ${r.brokerRss.map((b) => `${fmt(b / 1024 / 1024)} MiB`).join(' / ')}`],
      ['verdict', r.verdict],
    ]),
    '',
  ].join('\n');
}
