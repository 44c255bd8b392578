/**
 * Section 5 of `npm run bench` (`--only=inspector` runs it alone): what the agent's recording
 * proxy costs a visitor. The same local app, directly and through the proxy, in alternating
 * rounds of one run at a fixed 1,000 requests per second (latency per request, measured with
 * performance.now(), so sub-millisecond differences show); then closed-loop rounds at full
 * speed for the throughput the proxy can reach; then the agent's RSS with a full ring of
 * 64 KiB bodies each way (and five rings' worth, to show it stays bounded).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import autocannon from 'autocannon';
import { build } from 'esbuild';
import { INSPECT_DEFAULTS } from '../packages/agent/src/inspector/exchange-store.js';
import { readFileSync } from 'node:fs';
import { cpuMs, REPO_ROOT, rssBytes } from './lib/services.js';
import { fmt, fmtBytes, markdownTable, median, percentile, type Verdict } from './lib/stats.js';

export const INSPECTOR_BUDGETS = { addedP50Ms: 1, throughputRatio: 0.8, rssAtFullRingBytes: 100_000_000 };

export function inspectorSettings(quick: boolean) {
  return {
    rate: 1_000,
    connections: 32,
    rounds: quick ? 2 : 4,
    roundSeconds: quick ? 2 : 5,
    warmupSeconds: quick ? 1 : 2,
    saturationRounds: quick ? 1 : 3,
    saturationSeconds: quick ? 2 : 3,
    saturationConnections: 16,
  };
}

interface RateRound {
  round: number;
  side: 'direct' | 'proxy';
  sent: number;
  ok: number;
  errors: number;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  /** The proxy process's CPU per request (µs), proxy rounds only. */
  proxyCpuUs?: number;
}

interface SaturationRound {
  round: number;
  side: 'direct' | 'proxy';
  rps: number;
  p50: number;
  non2xx: number;
  errors: number;
}

export interface InspectorResult {
  settings: ReturnType<typeof inspectorSettings>;
  rounds: RateRound[];
  saturation: SaturationRound[];
  direct: { p50: number; p99: number; rps: number };
  proxy: { p50: number; p99: number; rps: number; cpuUs: number };
  addedP50Ms: number;
  throughputRatio: number;
  saturationRatio: number;
  rss: { idle: number; afterLoad: number; fullRing: number; loadedFullRing: number; fiveRings: number; keptBytesAtFullRing: number; keptBytesAtFiveRings: number; listed: number; anonIdle: number; anonFullRing: number; anonLoadedFullRing: number; anonFiveRings: number };
  verdicts: { latency: Verdict; throughput: Verdict; rss: Verdict };
}

/** The private part of a process's RSS (RssAnon, Linux): VmRSS minus the pages of files it maps, such as the node binary's code. */
function rssAnonBytes(pid: number | undefined): number {
  try {
    const m = /^RssAnon:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

interface Child {
  proc: ChildProcess;
  info: Record<string, number>;
}

/** Starts a bundled script and reads the JSON line it prints when it is ready. */
async function startChild(file: string, args: string[]): Promise<Child> {
  const proc = spawn(process.execPath, [...(process.env.BENCH_NODE_FLAGS ? process.env.BENCH_NODE_FLAGS.split(' ') : []), file, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: proc.stdout! });
  const first = await new Promise<string>((resolve, reject) => {
    lines.once('line', resolve);
    proc.once('exit', (code) => reject(new Error(`${path.basename(file)} exited ${code} before it was ready`)));
  });
  return { proc, info: JSON.parse(first) as Record<string, number> };
}

async function stopChild(child: Child | undefined): Promise<void> {
  if (!child || child.proc.exitCode !== null) return;
  const exited = new Promise<void>((resolve) => child.proc.once('exit', () => resolve()));
  child.proc.kill('SIGTERM');
  await exited;
}

/** `rate` GETs per second for `seconds`, open loop (sent on schedule, whatever the answers do), over keep-alive connections. */
async function fixedRate(port: number, rate: number, seconds: number, connections: number): Promise<{ latencies: number[]; sent: number; ok: number; errors: number; elapsedMs: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  const total = Math.round(rate * seconds);
  const latencies: number[] = [];
  let sent = 0;
  let ok = 0;
  let errors = 0;
  let inflight = 0;
  const start = performance.now();
  let last = start;
  try {
    await new Promise<void>((resolve) => {
      const settle = () => {
        inflight -= 1;
        if (sent >= total && inflight === 0) resolve();
      };
      const fire = () => {
        sent += 1;
        inflight += 1;
        const t0 = performance.now();
        const req = request({ host: '127.0.0.1', port, path: '/small', agent }, (res) => {
          res.resume();
          res.on('end', () => {
            last = performance.now();
            latencies.push(last - t0);
            if (res.statusCode === 200) ok += 1;
            else errors += 1;
            settle();
          });
        });
        req.on('error', () => {
          errors += 1;
          settle();
        });
        req.end();
      };
      const tick = () => {
        const due = Math.min(total, Math.floor(((performance.now() - start) * rate) / 1000));
        while (sent < due) fire();
        if (sent < total) setTimeout(tick, 1);
      };
      tick();
    });
  } finally {
    agent.destroy();
  }
  return { latencies, sent, ok, errors, elapsedMs: last - start };
}

async function saturate(port: number, seconds: number, connections: number) {
  const result = await autocannon({ url: `http://127.0.0.1:${port}/small`, connections, duration: seconds, pipelining: 1 });
  return { rps: result.requests.average, p50: result.latency.p50, non2xx: result.non2xx, errors: result.errors + result.timeouts };
}

/** POSTs `count` 64 KiB bodies through the proxy, `parallel` at a time, to `path` (/fill is answered with 1 KiB, /echo with 64 KiB). */
async function fill(port: number, path: string, count: number, parallel: number): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: parallel });
  const body = Buffer.alloc(INSPECT_DEFAULTS.bodyCapBytes, 'z');
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next += 1;
      await new Promise<void>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path: `${path}/${next}`, method: 'POST', agent, headers: { 'content-type': 'text/plain', 'content-length': body.length } }, (res) => {
          res.resume();
          res.on('end', () => resolve());
        });
        req.on('error', reject);
        req.end(body);
      });
    }
  };
  try {
    await Promise.all(Array.from({ length: parallel }, worker));
  } finally {
    agent.destroy();
  }
}

async function inspectorState(port: number): Promise<{ listed: number; bytes: number }> {
  const res = await fetch(`http://127.0.0.1:${port}/api/requests`);
  const body = (await res.json()) as { requests: unknown[]; bytes: number };
  return { listed: body.requests.length, bytes: body.bytes };
}

export async function inspectorSection(log: (message: string) => void, quick: boolean): Promise<InspectorResult> {
  const settings = inspectorSettings(quick);
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-inspector-'));
  let app: Child | undefined;
  let agent: Child | undefined;
  let fresh: Child | undefined;
  try {
    // Bundled the way the agent is (esbuild, one file each): no tsx loader in the measured process.
    await build({
      entryPoints: { 'inspector-agent': path.join(REPO_ROOT, 'bench/lib/inspector-agent.ts'), 'inspector-app': path.join(REPO_ROOT, 'bench/lib/inspector-app.ts') },
      outdir: dir, outExtension: { '.js': '.mjs' }, bundle: true, platform: 'node', format: 'esm', target: 'node20.19', logLevel: 'warning',
    });
    app = await startChild(path.join(dir, 'inspector-app.mjs'), []);
    agent = await startChild(path.join(dir, 'inspector-agent.mjs'), [String(app.info.port)]);
    const ports = { direct: app.info.port!, proxy: agent.info.proxyPort! };
    const idle = rssBytes(agent.proc.pid);
    const anonIdle = rssAnonBytes(agent.proc.pid);
    log(`inspector: app on ${ports.direct}, proxy on ${ports.proxy}; agent RSS idle ${fmtBytes(idle)}`);

    for (const side of ['direct', 'proxy'] as const) await fixedRate(ports[side], settings.rate, settings.warmupSeconds, settings.connections);
    const rounds: RateRound[] = [];
    for (let round = 1; round <= settings.rounds; round++) {
      // Alternating which side goes first, so a drift of the machine's load hits both.
      const order: Array<'direct' | 'proxy'> = round % 2 === 1 ? ['direct', 'proxy'] : ['proxy', 'direct'];
      for (const side of order) {
        const cpuBefore = cpuMs(agent.proc.pid);
        const r = await fixedRate(ports[side], settings.rate, settings.roundSeconds, settings.connections);
        const cpu = cpuMs(agent.proc.pid) - cpuBefore;
        const row: RateRound = {
          round, side, sent: r.sent, ok: r.ok, errors: r.errors, rps: (r.ok * 1000) / r.elapsedMs,
          p50: percentile(r.latencies, 50), p90: percentile(r.latencies, 90), p99: percentile(r.latencies, 99),
          ...(side === 'proxy' ? { proxyCpuUs: (cpu * 1000) / r.sent } : {}),
        };
        rounds.push(row);
        log(`inspector: round ${round} ${side}: ${fmt(row.rps)} req/s, p50 ${fmt(row.p50, 3)} ms, p99 ${fmt(row.p99, 3)} ms, errors ${row.errors}`);
      }
    }
    const afterLoad = rssBytes(agent.proc.pid);
    await fill(ports.proxy, '/fill', INSPECT_DEFAULTS.maxExchanges, 8);
    const loadedFullRing = rssBytes(agent.proc.pid);
    const anonLoadedFullRing = rssAnonBytes(agent.proc.pid);
    // The budget's case on its own: a fresh agent whose ring is filled with 64 KiB bodies.
    fresh = await startChild(path.join(dir, 'inspector-agent.mjs'), [String(app.info.port)]);
    await fill(fresh.info.proxyPort!, '/fill', INSPECT_DEFAULTS.maxExchanges, 8);
    const fullRing = rssBytes(fresh.proc.pid);
    const anonFullRing = rssAnonBytes(fresh.proc.pid);
    const atFull = await inspectorState(fresh.info.port!);
    await stopChild(fresh);
    const saturation: SaturationRound[] = [];
    for (let round = 1; round <= settings.saturationRounds; round++) {
      const order: Array<'direct' | 'proxy'> = round % 2 === 1 ? ['direct', 'proxy'] : ['proxy', 'direct'];
      for (const side of order) {
        const s = await saturate(ports[side], settings.saturationSeconds, settings.saturationConnections);
        saturation.push({ round, side, ...s });
        log(`inspector: full speed round ${round} ${side}: ${fmt(s.rps)} req/s, p50 ${s.p50} ms`);
      }
    }
    await fill(ports.proxy, '/echo', INSPECT_DEFAULTS.maxExchanges * 4, 8);
    const fiveRings = rssBytes(agent.proc.pid);
    const anonFiveRings = rssAnonBytes(agent.proc.pid);
    const atFive = await inspectorState(agent.info.port!);
    log(`inspector: agent RSS after load ${fmtBytes(afterLoad)}, then a full ring ${fmtBytes(loadedFullRing)}, five rings ${fmtBytes(fiveRings)} (kept ${fmtBytes(atFive.bytes)}); a fresh agent with a full ring ${fmtBytes(fullRing)} (kept ${fmtBytes(atFull.bytes)})`);

    const of = (side: 'direct' | 'proxy', f: (r: RateRound) => number) => median(rounds.filter((r) => r.side === side).map(f));
    const direct = { p50: of('direct', (r) => r.p50), p99: of('direct', (r) => r.p99), rps: of('direct', (r) => r.rps) };
    const proxy = { p50: of('proxy', (r) => r.p50), p99: of('proxy', (r) => r.p99), rps: of('proxy', (r) => r.rps), cpuUs: of('proxy', (r) => r.proxyCpuUs!) };
    const addedP50Ms = proxy.p50 - direct.p50;
    const throughputRatio = proxy.rps / direct.rps;
    const satOf = (side: 'direct' | 'proxy') => median(saturation.filter((r) => r.side === side).map((r) => r.rps));
    const saturationRatio = satOf('proxy') / satOf('direct');
    const failed = rounds.some((r) => r.errors > 0);
    return {
      settings, rounds, saturation, direct, proxy, addedP50Ms, throughputRatio, saturationRatio,
      rss: { idle, afterLoad, fullRing, loadedFullRing, fiveRings, keptBytesAtFullRing: atFull.bytes, keptBytesAtFiveRings: atFive.bytes, listed: atFive.listed, anonIdle, anonFullRing, anonLoadedFullRing, anonFiveRings },
      verdicts: {
        latency: addedP50Ms < INSPECTOR_BUDGETS.addedP50Ms && !failed ? 'PASS' : 'FAIL',
        throughput: throughputRatio >= INSPECTOR_BUDGETS.throughputRatio && !failed ? 'PASS' : 'FAIL',
        rss: fullRing < INSPECTOR_BUDGETS.rssAtFullRingBytes ? 'PASS' : 'FAIL',
      },
    };
  } finally {
    await stopChild(fresh);
    await stopChild(agent);
    await stopChild(app);
    rmSync(dir, { recursive: true, force: true });
  }
}

export function inspectorSummaryRows(r: InspectorResult): string[][] {
  return [
    ['5. inspector', `p50 added by the proxy at ${fmt(r.settings.rate)} req/s (proxy − direct)`, `${fmt(r.addedP50Ms, 3)} ms (${fmt(r.proxy.p50, 3)} − ${fmt(r.direct.p50, 3)})`, `< ${INSPECTOR_BUDGETS.addedP50Ms} ms`, r.verdicts.latency],
    ['5. inspector', `throughput through the proxy / direct at ${fmt(r.settings.rate)} req/s`, fmt(r.throughputRatio, 3), `>= ${INSPECTOR_BUDGETS.throughputRatio}`, r.verdicts.throughput],
    ['5. inspector', 'agent RSS (VmRSS) with a full ring of 64 KiB bodies, fresh agent', `${fmtBytes(r.rss.fullRing)} (private ${fmtBytes(r.rss.anonFullRing)})`, '< 100 MB', r.verdicts.rss],
    ['5. inspector', 'agent RSS after the rounds and a full ring · then full speed and 4 more rings, 64 KiB each way', `${fmtBytes(r.rss.loadedFullRing)} (private ${fmtBytes(r.rss.anonLoadedFullRing)}) · ${fmtBytes(r.rss.fiveRings)} (private ${fmtBytes(r.rss.anonFiveRings)})`, '', 'INFO'],
    ['5. inspector', 'full-speed throughput through the proxy / direct · proxy CPU per request', `${fmt(r.saturationRatio, 2)} · ${fmt(r.proxy.cpuUs)} µs`, '', 'INFO'],
  ];
}

export const INSPECTOR_HEADING = '## 5. Inspector proxy';

export function renderInspectorSection(r: InspectorResult): string {
  const s = r.settings;
  const out: string[] = [INSPECTOR_HEADING, ''];
  out.push(`Measured ${new Date().toISOString()}, Node ${process.version}, ${os.cpus().length} cores, load average at the end ${os.loadavg().map((l) => l.toFixed(2)).join(' / ')} (shared machine).`, '');
  out.push(`The agent's recording proxy and inspector (packages/agent/src/inspector, bundled with esbuild as the agent is, in a process of its own, default limits: ${INSPECT_DEFAULTS.maxExchanges} exchanges, ${INSPECT_DEFAULTS.bodyCapBytes / 1024} KiB per body, ${INSPECT_DEFAULTS.memoryCapBytes / 1024 / 1024} MiB in all) in front of a local app (bench/lib/inspector-app.ts, its own process; GET answers 1 KiB of JSON). Rounds alternate the app directly and the app through the proxy, ${s.rounds} of each, ${s.roundSeconds} s each, after a ${s.warmupSeconds} s warm-up of each: GETs sent open loop at a fixed ${fmt(s.rate)} req/s over up to ${s.connections} keep-alive connections, latency measured per request in the benchmark process (performance.now()). Then ${s.saturationRounds} alternating full-speed rounds of each (autocannon, ${s.saturationConnections} connections, ${s.saturationSeconds} s; the client, the app and the proxy share the 2 cores, so this is a floor). Then ${fmt(INSPECT_DEFAULTS.maxExchanges)} POSTs of 64 KiB answered with 1 KiB (a full ring of 64 KiB bodies), to that agent and to a fresh one; then, to the first, ${fmt(INSPECT_DEFAULTS.maxExchanges * 4)} POSTs of 64 KiB answered with 64 KiB (64 KiB captured each way).`, '');
  out.push(markdownTable(['budget', 'result', 'verdict'], inspectorSummaryRows(r).map((row) => [row[1]!, row[2]!, `${row[4]}${row[3] ? ` (${row[3]})` : ''}`])), '');
  out.push(markdownTable(['round', 'side', 'sent', 'ok', 'errors', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'proxy CPU µs/req'], r.rounds.map((x) => [String(x.round), x.side, fmt(x.sent), fmt(x.ok), fmt(x.errors), fmt(x.rps), fmt(x.p50, 3), fmt(x.p90, 3), fmt(x.p99, 3), x.proxyCpuUs === undefined ? '' : fmt(x.proxyCpuUs)])), '');
  out.push(`Medians of rounds: direct p50 ${fmt(r.direct.p50, 3)} ms, p99 ${fmt(r.direct.p99, 3)} ms, ${fmt(r.direct.rps)} req/s; through the proxy p50 ${fmt(r.proxy.p50, 3)} ms, p99 ${fmt(r.proxy.p99, 3)} ms, ${fmt(r.proxy.rps)} req/s. **The proxy adds ${fmt(r.addedP50Ms, 3)} ms at p50; throughput ratio ${fmt(r.throughputRatio, 3)}.** The proxy process used ${fmt(r.proxy.cpuUs)} µs of CPU per request (from /proc).`, '');
  out.push(markdownTable(['full-speed round', 'side', 'req/s', 'p50 ms', 'non-2xx', 'errors'], r.saturation.map((x) => [String(x.round), x.side, fmt(x.rps), fmt(x.p50), fmt(x.non2xx), fmt(x.errors)])), '');
  out.push(`At full speed the proxy reaches ${fmt(r.saturationRatio, 2)} of the direct throughput (INFO: there, three processes contend for two cores).`, '');
  out.push(`Agent RSS (VmRSS; in brackets the private part, RssAnon, without the pages of the node binary and other mapped files). A fresh agent: ${fmtBytes(r.rss.idle)} (${fmtBytes(r.rss.anonIdle)}) idle, **${fmtBytes(r.rss.fullRing)} (${fmtBytes(r.rss.anonFullRing)}) with a full ring** of 64 KiB request bodies (500 exchanges; the inspector counted ${fmtBytes(r.rss.keptBytesAtFullRing)} kept: the ${INSPECT_DEFAULTS.memoryCapBytes / 1024 / 1024} MiB cap keeps the newest bodies, the older exchanges their sizes). The agent of the rounds above: ${fmtBytes(r.rss.afterLoad)} after them, ${fmtBytes(r.rss.loadedFullRing)} (${fmtBytes(r.rss.anonLoadedFullRing)}) after a full ring, ${fmtBytes(r.rss.fiveRings)} (${fmtBytes(r.rss.anonFiveRings)}) after the full-speed rounds and four rings more with 64 KiB each way (${fmtBytes(r.rss.keptBytesAtFiveRings)} kept, ${fmt(r.rss.listed)} exchanges listed).`, '');
  return out.join('\n');
}
