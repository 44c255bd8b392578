import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCloudflareClient } from '../../src/cloudflare/cloudflare-client.js';
import type { ReconcileReport } from '../../src/reconcile/reconcile-report.js';
import { startTestBroker, TEST_DOMAIN, type TestBroker } from '../helpers/broker.js';
import { CLI_TEST_TIMEOUT_MS, cliEnv, cliRunner } from '../helpers/cli.js';

const runCli = cliRunner();

const GRACE_SECONDS = 1;

// One broker (and emulator) per test: a pass sees everything upstream, so tests must not share it.
let broker: TestBroker;
let env: Record<string, string>;
beforeEach(async () => {
  broker = await startTestBroker();
  env = cliEnv(broker, { RECONCILE_GRACE_SECONDS: String(GRACE_SECONDS) });
});
afterEach(async () => {
  await broker?.close();
});

/** A tunnel `tb-<uuid>` and its CNAME with no row: what a broker that crashed after its upstream calls leaves behind. */
async function orphan() {
  const client = createCloudflareClient(broker.config.cloudflare);
  const rowId = randomUUID();
  const tunnel = await client.zeroTrust.tunnels.cloudflared.create({ account_id: broker.emulator.accountId, name: `tb-${rowId}`, config_src: 'cloudflare' });
  const record = await client.dns.records.create({
    zone_id: broker.emulator.zoneId, type: 'CNAME', name: `o${rowId.slice(0, 8)}.${TEST_DOMAIN}`, content: `${tunnel.id}.cfargotunnel.com`, proxied: true, ttl: 1,
  });
  return { rowId, cfTunnelId: tunnel.id!, dnsRecordId: record.id! };
}

/** Waits out the grace period by the emulator's own creation times, which are what the reconciler judges. */
async function olderThanGrace(ids: string[]) {
  const created = [
    ...broker.emulator.allTunnels().filter((t) => ids.includes(t.id)).map((t) => Date.parse(t.created_at)),
    ...broker.emulator.dnsRecords().filter((r) => ids.includes(r.id)).map((r) => Date.parse(r.created_on)),
  ];
  expect(created).toHaveLength(ids.length);
  await sleep(Math.max(0, Math.max(...created) + GRACE_SECONDS * 1000 + 50 - Date.now()));
}

const liveUpstream = () => new Set([...broker.emulator.liveTunnels().map((t) => t.id), ...broker.emulator.dnsRecords().map((r) => r.id)]);

describe('reconcile', { timeout: CLI_TEST_TIMEOUT_MS }, () => {
  it('--dry-run reports the orphans and removes nothing; a real pass removes them, keeps live tunnels, and audits leftovers of ended ones', async () => {
    const lost = await orphan();
    // A live tunnel, and one whose row ended while its upstream half survived (a lost delete).
    const userId = `user-${randomUUID().slice(0, 8)}`;
    const create = async () => {
      const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 5000 } });
      return broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: (res.json() as { tunnelId: string }).tunnelId } });
    };
    const live = await create();
    const leftover = await create();
    await broker.app.prisma.tunnel.update({ where: { id: leftover.id }, data: { status: 'ended', endReason: 'deleted', endedAt: new Date() } });
    await olderThanGrace([lost.cfTunnelId, lost.dnsRecordId, live.cfTunnelId!, live.dnsRecordId!, leftover.cfTunnelId!, leftover.dnsRecordId!]);
    const orphans = [lost.cfTunnelId, lost.dnsRecordId, leftover.cfTunnelId!, leftover.dnsRecordId!];

    const dry = await runCli(['reconcile', '--dry-run', '--json'], env);

    expect(dry).toMatchObject({ code: 0, stderr: '' });
    const report = JSON.parse(dry.stdout) as ReconcileReport;
    expect(report).toMatchObject({ dryRun: true, status: 'completed', graceSeconds: GRACE_SECONDS, failed: [] });
    expect(report.removed.map((e) => e.id).sort()).toEqual([...orphans].sort());
    expect(report.removed.find((e) => e.id === lost.cfTunnelId)).toMatchObject({ resource: 'tunnel', reason: 'no_row', rowId: lost.rowId });
    expect(report.removed.find((e) => e.id === leftover.cfTunnelId)).toMatchObject({ resource: 'tunnel', reason: 'row_ended', rowId: leftover.id });
    expect(report.skipped).toEqual(expect.arrayContaining([expect.objectContaining({ id: live.cfTunnelId, reason: 'live_row' })]));
    for (const id of orphans) expect(liveUpstream().has(id)).toBe(true);

    const real = await runCli(['reconcile'], env);

    expect(real).toMatchObject({ code: 0, stderr: '' });
    expect(real.stdout).toMatch(/^removed 4:$/m);
    for (const id of orphans) expect(real.stdout).toMatch(new RegExp(`^(tunnel|dns_record)\\s+${id}\\s`, 'm'));
    expect(real.stdout).toMatch(/^kept \d+: .*\blive_row\b/m);
    for (const id of orphans) expect(liveUpstream().has(id)).toBe(false);
    expect(liveUpstream().has(live.cfTunnelId!)).toBe(true);
    expect(liveUpstream().has(live.dnsRecordId!)).toBe(true);

    const audit = await broker.app.prisma.tunnelEvent.findMany({ where: { tunnelId: leftover.id, type: 'orphan_removed' }, orderBy: { id: 'asc' } });
    expect(audit.map((e) => [e.actor, (e.details as { resource: string }).resource, (e.details as { id: string }).id]).sort()).toEqual([
      ['reconciler', 'dns_record', leftover.dnsRecordId],
      ['reconciler', 'tunnel', leftover.cfTunnelId],
    ].sort());

    // Nothing left to do.
    const again = await runCli(['reconcile', '--dry-run'], env);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/^dry run: listed/);
    expect(again.stdout).toMatch(/^nothing to remove$/m);
  });

  it('exits 1 with the reason on stderr when a removal fails, and when another broker holds the lock', async () => {
    const lost = await orphan();
    await olderThanGrace([lost.cfTunnelId, lost.dnsRecordId]);
    const remove = broker.emulator.injectFault({ kind: 'error5xx', endpoint: 'dns.delete', status: 500 });
    let failed;
    try {
      failed = await runCli(['reconcile', '--json'], { ...env, CLOUDFLARE_MAX_RETRIES: '0' });
    } finally {
      remove();
    }
    expect(failed.code).toBe(1);
    expect((JSON.parse(failed.stdout) as ReconcileReport).failed.map((e) => e.id)).toEqual([lost.dnsRecordId]);
    expect(failed.stderr).toBe('error: 1 removal failed; the next pass retries\n');

    await broker.redis.set('reconcile:lock', 'someone-else', 'PX', 60_000);
    try {
      const locked = await runCli(['reconcile'], env);
      expect(locked).toMatchObject({ code: 1, stdout: '' });
      expect(locked.stderr).toMatch(/^error: another broker is reconciling right now; nothing was done/);
    } finally {
      await broker.redis.del('reconcile:lock');
    }
  });
});
