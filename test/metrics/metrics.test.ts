import { randomUUID } from 'node:crypto';
import { register as globalRegistry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BrokerMetrics, DEFAULT_LIVE_TUNNELS_CACHE_MS } from '../../src/metrics/metrics.js';
import { countLiveTunnels } from '../../src/plugins/metrics.js';
import { startTestBroker, type TestBroker } from '../helpers/broker.js';
import { heartbeatKeysOf } from '../../src/tunnels/heartbeat-keys.js';

/** Prometheus text -> samples keyed by `name{k="v",...}` with the labels sorted. */
function parseSamples(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`unparseable sample line: ${line}`);
    const labels = [...(match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map(([, k, v]) => `${k}="${v}"`).sort();
    samples.set(`${match[1]}${labels.length > 0 ? `{${labels.join(',')}}` : ''}`, Number(match[3]));
  }
  return samples;
}

function sampleKey(name: string, labels: Record<string, string> = {}): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort();
  return `${name}${parts.length > 0 ? `{${parts.join(',')}}` : ''}`;
}

/** A sample's value; fails the test if the sample is missing (a renamed metric must not pass silently). */
function value(samples: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  const key = sampleKey(name, labels);
  const found = samples.get(key);
  if (found === undefined) throw new Error(`no sample ${key}; have: ${[...samples.keys()].filter((k) => k.startsWith(name)).join(' ')}`);
  return found;
}

async function scrape(broker: TestBroker, headers: Record<string, string> = {}) {
  const res = await broker.app.inject({ method: 'GET', url: '/metrics', headers });
  expect(res.statusCode, res.body.slice(0, 300)).toBe(200);
  expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseSamples(res.body);
}

const METRICS_TOKEN = 'metrics-token-0123456789abcdef';

let a: TestBroker;
let b: TestBroker;
beforeAll(async () => {
  a = await startTestBroker({ env: { MAX_TUNNELS_PER_USER: '1', CREATE_RATE_LIMIT_PER_MINUTE: '2' } });
  // Its own database, Redis prefix and emulator, in the same process: its metrics must stay its own.
  b = await startTestBroker({ env: { METRICS_TOKEN } });
});
afterAll(async () => {
  await b?.close();
  await a?.close();
});

describe('GET /metrics after real traffic', () => {
  it('reports creates, heartbeats, rate limits, reaps, upstream calls, live tunnels, the budget and the process', async () => {
    const create = (userId: string, payload: object, headers: Record<string, string> = {}) =>
      a.app.inject({ method: 'POST', url: '/v1/tunnels', headers: { ...a.auth(userId), ...headers }, payload });

    // user1: one tunnel (the quota is 1), then TUNNEL_LIMIT_EXCEEDED, then RATE_LIMITED (2 attempts a minute).
    const user1 = `user-${randomUUID()}`;
    const first = await create(user1, { port: 3000 });
    expect(first.statusCode).toBe(201);
    const reapedId: string = first.json().tunnelId;
    expect((await create(user1, { port: 3001 })).json().code).toBe('TUNNEL_LIMIT_EXCEEDED');
    expect((await create(user1, { port: 3002 })).json().code).toBe('RATE_LIMITED');

    // user2: INVALID_PORT, then a create whose DNS step fails once upstream and is retried.
    const user2 = `user-${randomUUID()}`;
    expect((await create(user2, { port: 0 })).json().code).toBe('INVALID_PORT');
    const removeFault = a.emulator.injectFault({ endpoint: 'dns.create', kind: 'error5xx', status: 503, times: 1 });
    try {
      expect((await create(user2, { port: 3000 })).statusCode).toBe(201);
    } finally {
      removeFault();
    }

    // user3: a create and its idempotent replay.
    const user3 = `user-${randomUUID()}`;
    expect((await create(user3, { port: 3000 }, { 'idempotency-key': 'k1' })).statusCode).toBe(201);
    const replay = await create(user3, { port: 3000 }, { 'idempotency-key': 'k1' });
    expect(replay.statusCode).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');

    // Heartbeats: ok, not found, unauthenticated.
    expect((await a.app.inject({ method: 'POST', url: `/v1/tunnels/${reapedId}/heartbeat`, headers: a.auth(user1) })).statusCode).toBe(200);
    expect((await a.app.inject({ method: 'POST', url: `/v1/tunnels/${randomUUID()}/heartbeat`, headers: a.auth(user1) })).statusCode).toBe(404);
    expect((await a.app.inject({ method: 'POST', url: `/v1/tunnels/${reapedId}/heartbeat` })).statusCode).toBe(401);

    // user1's tunnel lapsed 3 s ago, as far as Redis is concerned; the reaper ends it.
    await a.redis.zadd(heartbeatKeysOf(reapedId).deadlines, Date.now() - 3_000, reapedId);
    const sweep = await a.app.reaper!.sweep();
    expect(sweep.ended).toBe(1);

    const samples = await scrape(a);

    expect(value(samples, 'tunnel_broker_tunnel_creates_total', { outcome: 'created' })).toBe(3);
    expect(value(samples, 'tunnel_broker_tunnel_creates_total', { outcome: 'replayed' })).toBe(1);
    expect(value(samples, 'tunnel_broker_tunnel_creates_total', { outcome: 'TUNNEL_LIMIT_EXCEEDED' })).toBe(1);
    expect(value(samples, 'tunnel_broker_tunnel_creates_total', { outcome: 'RATE_LIMITED' })).toBe(1);
    expect(value(samples, 'tunnel_broker_tunnel_creates_total', { outcome: 'INVALID_PORT' })).toBe(1);

    expect(value(samples, 'tunnel_broker_rate_limit_rejections_total', { limit: 'create_rate' })).toBe(1);
    expect(value(samples, 'tunnel_broker_rate_limit_rejections_total', { limit: 'tunnels_per_user' })).toBe(1);

    expect(value(samples, 'tunnel_broker_heartbeats_total', { outcome: 'ok' })).toBe(1);
    expect(value(samples, 'tunnel_broker_heartbeats_total', { outcome: 'not_found' })).toBe(1);
    expect(value(samples, 'tunnel_broker_heartbeats_total', { outcome: 'unauthorized' })).toBe(1);
    expect(value(samples, 'tunnel_broker_heartbeats_total', { outcome: 'error' })).toBe(0);

    expect(value(samples, 'tunnel_broker_reaps_total', { outcome: 'ended' })).toBe(1);
    expect(value(samples, 'tunnel_broker_reaps_total', { outcome: 'failed' })).toBe(0);
    expect(value(samples, 'tunnel_broker_reap_delay_seconds_count')).toBe(1);
    const delay = value(samples, 'tunnel_broker_reap_delay_seconds_sum');
    expect(delay).toBeGreaterThanOrEqual(2.9);
    expect(delay).toBeLessThan(30);
    expect(value(samples, 'tunnel_broker_reap_delay_seconds_bucket', { le: '2.5' })).toBe(0);
    expect(value(samples, 'tunnel_broker_reap_delay_seconds_bucket', { le: '+Inf' })).toBe(1);

    // Three creates made three tunnels and records; the injected 500 shows as its own outcome.
    const upstream = (operation: string, outcome: string) =>
      value(samples, 'tunnel_broker_upstream_call_duration_seconds_count', { operation, outcome });
    expect(upstream('tunnel.create', 'ok')).toBe(3);
    expect(upstream('dns.create', 'ok')).toBe(3);
    expect(upstream('dns.create', 'unavailable')).toBe(1);
    expect(upstream('tunnel.configuration.put', 'ok')).toBe(3);
    expect(upstream('tunnel.delete', 'ok')).toBe(1);
    expect(upstream('dns.delete', 'ok')).toBe(1);
    expect(value(samples, 'tunnel_broker_upstream_call_duration_seconds_sum', { operation: 'tunnel.create', outcome: 'ok' })).toBeGreaterThan(0);

    // user2's and user3's tunnels are live; user1's has ended.
    expect(value(samples, 'tunnel_broker_live_tunnels', { status: 'active' })).toBe(2);
    expect(value(samples, 'tunnel_broker_live_tunnels', { status: 'creating' })).toBe(0);
    expect(value(samples, 'tunnel_broker_live_tunnels', { status: 'ending' })).toBe(0);

    // Every request sent took a budget slot (the emulator saw each one).
    const limit = value(samples, 'tunnel_broker_cloudflare_budget_requests');
    expect(limit).toBe(a.config.cloudflare.budget.requests);
    expect(value(samples, 'tunnel_broker_cloudflare_budget_remaining')).toBe(limit - a.emulator.requests.length);

    expect(value(samples, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(value(samples, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
    expect(samples.has(sampleKey('nodejs_eventloop_lag_p99_seconds'))).toBe(true);
    expect(value(samples, 'tunnel_broker_metrics_collect_failures_total', { source: 'live_tunnels' })).toBe(0);
    expect(value(samples, 'tunnel_broker_metrics_collect_failures_total', { source: 'cloudflare_budget' })).toBe(0);
  });
});

describe('registries', () => {
  it('are per app: another app in the same process counts nothing of this traffic, and the global registry is untouched', async () => {
    const samples = await scrape(b, { authorization: `Bearer ${METRICS_TOKEN}` });
    expect(value(samples, 'tunnel_broker_tunnel_creates_total', { outcome: 'created' })).toBe(0);
    for (const outcome of ['ok', 'not_found', 'unauthorized']) expect(value(samples, 'tunnel_broker_heartbeats_total', { outcome })).toBe(0);
    expect(value(samples, 'tunnel_broker_reaps_total', { outcome: 'ended' })).toBe(0);
    expect([...samples.keys()].some((k) => k.startsWith('tunnel_broker_upstream_call_duration_seconds_count'))).toBe(false);
    expect(await globalRegistry.metrics()).not.toContain('tunnel_broker_');
  });
});

describe('METRICS_TOKEN', () => {
  it('without one configured, /metrics is open', async () => {
    expect((await a.app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(200);
  });

  it('with one configured, answers 401 in the error envelope unless the bearer token matches', async () => {
    for (const authorization of [undefined, 'Bearer wrong', `Bearer ${METRICS_TOKEN}x`, `Bearer ${METRICS_TOKEN.slice(0, -1)}`, METRICS_TOKEN, `Basic ${METRICS_TOKEN}`, `Bearer ${b.token('u')}`]) {
      const res = await b.app.inject({ method: 'GET', url: '/metrics', headers: authorization === undefined ? {} : { authorization } });
      expect(res.statusCode, String(authorization)).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
      expect(res.json()).toEqual({ code: 'UNAUTHORIZED', message: expect.any(String) });
      expect(res.body).not.toContain('tunnel_broker_');
    }
    expect((await b.app.inject({ method: 'GET', url: '/metrics', headers: { authorization: `bearer ${METRICS_TOKEN}` } })).statusCode).toBe(200);
  });
});

describe('scrape-time reads', () => {
  it('count live tunnels with one GROUP BY per cache period, shared by concurrent scrapes', async () => {
    let clock = 1_000_000;
    let queries = 0;
    const metrics = new BrokerMetrics({ cloudflareBudgetRequests: 10, now: () => clock, defaultMetrics: false });
    metrics.bindSources({
      liveTunnels: () => {
        queries++;
        return countLiveTunnels(a.app.prisma);
      },
      cloudflareBudgetRemaining: async () => 7,
    });
    const active = async () => value(parseSamples(await metrics.scrape()), 'tunnel_broker_live_tunnels', { status: 'active' });

    const [before] = await Promise.all([active(), active(), active()]);
    expect(queries).toBe(1);
    const user = `user-${randomUUID()}`;
    expect((await a.app.inject({ method: 'POST', url: '/v1/tunnels', headers: a.auth(user), payload: { port: 1 } })).statusCode).toBe(201);
    expect(await active()).toBe(before);
    clock += DEFAULT_LIVE_TUNNELS_CACHE_MS - 1;
    expect(await active()).toBe(before);
    expect(queries).toBe(1);
    clock += 1;
    expect(await active()).toBe(before! + 1);
    expect(queries).toBe(2);
  });

  it('a source that hangs or fails cannot hang the scrape: its gauge reads NaN and the failure is counted', async () => {
    const metrics = new BrokerMetrics({ cloudflareBudgetRequests: 10, collectTimeoutMs: 100, defaultMetrics: false });
    metrics.bindSources({
      liveTunnels: () => new Promise(() => {}),
      cloudflareBudgetRemaining: () => Promise.reject(new Error('redis is down')),
    });
    const started = performance.now();
    const samples = parseSamples(await metrics.scrape());
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(value(samples, 'tunnel_broker_live_tunnels', { status: 'active' })).toBeNaN();
    expect(value(samples, 'tunnel_broker_cloudflare_budget_remaining')).toBeNaN();
    expect(value(samples, 'tunnel_broker_metrics_collect_failures_total', { source: 'live_tunnels' })).toBe(1);
    expect(value(samples, 'tunnel_broker_metrics_collect_failures_total', { source: 'cloudflare_budget' })).toBe(1);
    expect(value(samples, 'tunnel_broker_cloudflare_budget_requests')).toBe(10);
  });
});
