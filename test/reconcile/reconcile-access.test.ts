import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createCloudflareClient } from '../../src/cloudflare/cloudflare-client.js';
import { Reconciler } from '../../src/reconcile/reconciler.js';
import { TEST_DOMAIN, type TestBroker, useTestBroker } from '../helpers/broker.js';

const broker = useTestBroker({ env: { ACCESS_TEAM_EMAIL_DOMAINS: 'team.example' } });

function reconciler(b: TestBroker): Reconciler {
  return new Reconciler({
    prisma: b.app.prisma,
    redis: b.app.redis,
    provider: b.app.tunnelProvider,
    logger: b.app.log.child({ component: 'reconciler-test' }),
    tunnelDomain: b.config.tunnels.domain,
    tunnelNamePrefix: b.config.cloudflare.tunnelNamePrefix,
    intervalMs: 60_000,
    graceMs: 0,
    perPage: 2,
  });
}

/** Access objects made straight through the SDK: what a crashed broker, or someone else, leaves behind. */
function upstream(b: TestBroker) {
  const client = createCloudflareClient(b.config.cloudflare);
  const account_id = b.emulator.accountId;
  return {
    async policy(name: string): Promise<string> {
      const p = await client.zeroTrust.access.policies.create({ account_id, name, decision: 'allow', include: [{ email: { email: 'a@x.example' } }] });
      return p.id!;
    },
    async app(name: string, domain: string, policyIds: string[]): Promise<string> {
      const a = await client.zeroTrust.access.applications.create({
        account_id, type: 'self_hosted', name, domain, session_duration: '24h', policies: policyIds.map((id, i) => ({ id, precedence: i + 1 })),
      } as never);
      return (a as { id: string }).id;
    },
  };
}

describe('the reconciler and Access objects', () => {
  it("removes Access applications and policies named after no live row, and never touches others'", async () => {
    const up = upstream(broker);
    const orphanRow = randomUUID();
    const orphanPolicy = await up.policy(`tb-${orphanRow}`);
    const orphanApp = await up.app(`tb-${orphanRow}`, `gone.${TEST_DOMAIN}`, [orphanPolicy]);
    // Someone else's, some of them even under the prefix: never removed.
    const foreignPolicy = await up.policy('tb-not-a-row-id');
    const foreignApp = await up.app('tb-not-a-row-id', `theirs.${TEST_DOMAIN}`, [foreignPolicy]);
    const otherApp = await up.app('hr portal', 'hr.example.com', []);
    // A live tunnel's own objects stay.
    const owner = `user-${randomUUID()}`;
    const live = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(owner), payload: { port: 3000, access: { mode: 'emails', emails: ['b@y.example'] } } });
    expect(live.statusCode).toBe(201);
    const liveId = live.json().tunnelId as string;
    // The shared team gate is the broker's, yet belongs to no row: it stays.
    expect((await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(owner), payload: { port: 3001 } })).statusCode).toBe(201);

    const report = await reconciler(broker).reconcile();
    expect(report.status).toBe('completed');
    const removed = report.removed.map((r) => [r.resource, r.id]);
    expect(removed).toEqual(expect.arrayContaining([['access_app', orphanApp], ['access_policy', orphanPolicy]]));
    expect(removed).toHaveLength(2);
    const apps = broker.emulator.accessApps().map((a) => a.id);
    expect(apps).toEqual(expect.arrayContaining([foreignApp, otherApp]));
    expect(apps).not.toContain(orphanApp);
    expect(broker.emulator.accessPolicies().map((p) => p.id)).toContain(foreignPolicy);
    expect(broker.emulator.accessApps().some((a) => a.name === `tb-${liveId}`)).toBe(true);
    expect(broker.emulator.accessApps().some((a) => a.name === 'tb-team')).toBe(true);
    expect(report.skipped.filter((s) => s.rowId === liveId && s.resource.startsWith('access_')).map((s) => s.reason)).toEqual(['live_row', 'live_row']);
  });
});

describe('the reconciler and the team gate', () => {
  it('makes the wildcard team gate again when it vanished upstream', async () => {
    const owner = `user-${randomUUID()}`;
    const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(owner), payload: { port: 3000 } });
    expect(res.statusCode).toBe(201);
    const client = createCloudflareClient(broker.config.cloudflare);
    const gate = broker.emulator.accessApps().find((a) => a.name === 'tb-team')!;
    await client.zeroTrust.access.applications.delete(gate.id, { account_id: broker.emulator.accountId });
    expect(broker.emulator.audience(res.json().hostname)).toEqual({ gate: 'none' });
    await reconciler(broker).reconcile();
    expect(broker.emulator.audience(res.json().hostname)).toMatchObject({ gate: 'login', appName: 'tb-team', emailDomains: ['team.example'] });
  });
});
