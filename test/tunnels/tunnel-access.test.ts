import { randomUUID } from 'node:crypto';
import { createSigner } from 'fast-jwt';
import { describe, expect, it } from 'vitest';
import { makeDue, TEST_DOMAIN, TEST_JWT_SECRET, type TestBroker, useTestBroker } from '../helpers/broker.js';

const TEAM_ENV = { ACCESS_TEAM_EMAIL_DOMAINS: 'team.example', ACCESS_TEAM_EMAILS: 'contractor@else.example', ACCESS_SESSION_DURATION: '12h' };
const team = useTestBroker({ env: TEAM_ENV });
const plain = useTestBroker();
const closed = useTestBroker({ env: { ...TEAM_ENV, ACCESS_ALLOW_PUBLIC: 'false' } });

const user = () => `user-${randomUUID()}`;
const signWithEmail = createSigner({ key: TEST_JWT_SECRET, algorithm: 'HS256', expiresIn: 3_600_000 });

interface Created {
  tunnelId: string;
  hostname: string;
  access: { mode: string; emails?: string[] };
}

async function create(b: TestBroker, userId: string, access?: unknown, headers: Record<string, string> = b.auth(userId)) {
  return b.app.inject({ method: 'POST', url: '/v1/tunnels', headers, payload: { port: 3000, ...(access === undefined ? {} : { access }) } });
}

async function created(b: TestBroker, userId: string, access?: unknown, headers?: Record<string, string>): Promise<Created> {
  const res = await create(b, userId, access, headers);
  expect(res.statusCode, res.body).toBe(201);
  return res.json() as Created;
}

const patch = (b: TestBroker, userId: string, id: string, access: unknown) =>
  b.app.inject({ method: 'PATCH', url: `/v1/tunnels/${id}`, headers: b.auth(userId), payload: { access } });

/** The Access objects named after this row: its own application and policy. */
function ownObjects(b: TestBroker, tunnelId: string) {
  const name = `${b.config.cloudflare.tunnelNamePrefix}${tunnelId}`;
  return [...b.emulator.accessApps().filter((a) => a.name === name), ...b.emulator.accessPolicies().filter((p) => p.name === name)];
}

/** Proves, from the emulator's log of every DNS and Access change, that the hostname never resolved without a gate. */
function expectAlwaysGated(b: TestBroker, hostname: string): void {
  const log = b.emulator.gateLog();
  expect(log.some((e) => e.endpoint === 'dns.create')).toBe(true);
  for (const entry of log) expect(entry.ungated, `after request ${entry.requestIndex} (${entry.endpoint})`).not.toContain(hostname);
}

describe('Access with a team rule', () => {
  it('gates a tunnel created without `access` to the team, by the wildcard team application, with no object of its own', async () => {
    const t = await created(team, user());
    expect(t.access).toEqual({ mode: 'team' });
    expect(team.emulator.audience(t.hostname)).toMatchObject({ gate: 'login', appName: 'tb-team', emailDomains: ['team.example'], emails: ['contractor@else.example'] });
    expect(team.emulator.canOpen(t.hostname, 'ada@team.example')).toBe(true);
    expect(team.emulator.canOpen(t.hostname, 'contractor@else.example')).toBe(true);
    expect(team.emulator.canOpen(t.hostname, 'mallory@evil.example')).toBe(false);
    expect(team.emulator.canOpen(t.hostname, null)).toBe(false);
    expect(ownObjects(team, t.tunnelId)).toEqual([]);
    const wildcard = team.emulator.accessApps().find((a) => a.name === 'tb-team');
    expect(wildcard).toMatchObject({ domain: `*.${TEST_DOMAIN}`, session_duration: '12h', type: 'self_hosted' });
    expectAlwaysGated(team, t.hostname);
  });

  it('makes the team gate once: later team creates send no Access request', async () => {
    await created(team, user());
    const before = team.emulator.requests.filter((r) => r.endpoint.startsWith('access.')).length;
    await created(team, user(), { mode: 'team' });
    expect(team.emulator.requests.filter((r) => r.endpoint.startsWith('access.')).length).toBe(before);
  });

  it('lets anyone open a public tunnel (its own application with the bypass policy), and echoes `access` in create, list and get', async () => {
    const owner = user();
    const t = await created(team, owner, { mode: 'public' });
    expect(t.access).toEqual({ mode: 'public' });
    expect(team.emulator.audience(t.hostname)).toMatchObject({ gate: 'public', appName: `tb-${t.tunnelId}` });
    expect(team.emulator.canOpen(t.hostname, null)).toBe(true);
    // The team's gate still covers everyone else's tunnels.
    const other = await created(team, user());
    expect(team.emulator.canOpen(other.hostname, null)).toBe(false);
    const list = await team.app.inject({ method: 'GET', url: '/v1/tunnels', headers: team.auth(owner) });
    expect(list.json().tunnels[0].access).toEqual({ mode: 'public' });
    const get = await team.app.inject({ method: 'GET', url: `/v1/tunnels/${t.tunnelId}?include=events`, headers: team.auth(owner) });
    expect(get.json().access).toEqual({ mode: 'public' });
    expect(get.json().events.find((e: { type: string }) => e.type === 'created').details.access).toEqual({ mode: 'public', emails: [] });
    expectAlwaysGated(team, t.hostname);
  });

  it("lets only the listed people open an emails tunnel, the owner's own address (token claim) included", async () => {
    const owner = user();
    const headers = { authorization: `Bearer ${signWithEmail({ sub: owner, email: 'Owner@Team.example' })}` };
    const t = await created(team, owner, { mode: 'emails', emails: ['Guest@Partner.example'] }, headers);
    expect(t.access).toEqual({ mode: 'emails', emails: ['guest@partner.example', 'owner@team.example'] });
    expect(team.emulator.audience(t.hostname)).toMatchObject({ gate: 'login', emails: ['guest@partner.example', 'owner@team.example'], emailDomains: [] });
    expect(team.emulator.canOpen(t.hostname, 'guest@partner.example')).toBe(true);
    expect(team.emulator.canOpen(t.hostname, 'ada@team.example')).toBe(false);
    expect(ownObjects(team, t.tunnelId)).toHaveLength(2);
    expectAlwaysGated(team, t.hostname);
  });

  it('PATCH changes the audience in place, owner only, and records access_changed', async () => {
    const owner = user();
    const t = await created(team, owner);
    expect((await patch(team, user(), t.tunnelId, { mode: 'public' })).statusCode).toBe(404);

    let res = await patch(team, owner, t.tunnelId, { mode: 'public' });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({ id: t.tunnelId, hostname: t.hostname, access: { mode: 'public' } });
    expect(team.emulator.canOpen(t.hostname, null)).toBe(true);

    res = await patch(team, owner, t.tunnelId, { mode: 'emails', emails: ['a@x.example', 'b@y.example'] });
    expect(res.statusCode, res.body).toBe(200);
    expect(team.emulator.canOpen(t.hostname, null)).toBe(false);
    expect(team.emulator.canOpen(t.hostname, 'b@y.example')).toBe(true);
    expect(team.emulator.canOpen(t.hostname, 'ada@team.example')).toBe(false);

    res = await patch(team, owner, t.tunnelId, { mode: 'emails', emails: ['c@z.example'] });
    expect(res.statusCode, res.body).toBe(200);
    expect(team.emulator.canOpen(t.hostname, 'b@y.example')).toBe(false);
    expect(team.emulator.canOpen(t.hostname, 'c@z.example')).toBe(true);

    res = await patch(team, owner, t.tunnelId, { mode: 'team' });
    expect(res.statusCode, res.body).toBe(200);
    expect(team.emulator.canOpen(t.hostname, 'ada@team.example')).toBe(true);
    expect(team.emulator.canOpen(t.hostname, 'c@z.example')).toBe(false);
    expect(ownObjects(team, t.tunnelId)).toEqual([]);

    const get = await team.app.inject({ method: 'GET', url: `/v1/tunnels/${t.tunnelId}?include=events`, headers: team.auth(owner) });
    expect(get.json().access).toEqual({ mode: 'team' });
    expect(get.json().events.filter((e: { type: string }) => e.type === 'access_changed')).toHaveLength(4);
    expectAlwaysGated(team, t.hostname);
  });

  it('runs one audience change at a time per tunnel: a concurrent one is 503 with Retry-After, and upstream matches the row', async () => {
    const owner = user();
    const t = await created(team, owner);
    team.emulator.setLatency(50);
    let answers;
    try {
      answers = await Promise.all([
        patch(team, owner, t.tunnelId, { mode: 'public' }),
        patch(team, owner, t.tunnelId, { mode: 'emails', emails: ['a@x.example'] }),
      ]);
    } finally {
      team.emulator.setLatency(0);
    }
    const statuses = answers.map((r) => r.statusCode).sort();
    expect(statuses).toEqual([200, 503]);
    expect(answers.find((r) => r.statusCode === 503)!.headers['retry-after']).toBe('1');
    const row = await team.app.prisma.tunnel.findUniqueOrThrow({ where: { id: t.tunnelId } });
    expect(row.leaseExpiresAt).toBeNull();
    const own = ownObjects(team, t.tunnelId).map((o) => o.id).sort();
    expect(own).toEqual([row.accessAppId, row.accessPolicyId].filter(Boolean).sort());
    // And the next change goes through.
    expect((await patch(team, owner, t.tunnelId, { mode: 'team' })).statusCode).toBe(200);
  });

  it('leaves no Access object behind when a tunnel is deleted (the DNS record goes first, its gate after)', async () => {
    const owner = user();
    const t = await created(team, owner, { mode: 'emails', emails: ['a@x.example'] });
    const res = await team.app.inject({ method: 'DELETE', url: `/v1/tunnels/${t.tunnelId}`, headers: team.auth(owner) });
    expect(res.statusCode).toBe(204);
    expect(ownObjects(team, t.tunnelId)).toEqual([]);
    expect(team.emulator.dnsRecords().some((r) => r.name === t.hostname)).toBe(false);
    const log = team.emulator.requests;
    const dnsDelete = log.findIndex((r) => r.endpoint === 'dns.delete' && r.status === 200);
    const appDelete = log.findLastIndex((r) => r.endpoint === 'access.app.delete' && r.status === 200);
    expect(dnsDelete).toBeGreaterThanOrEqual(0);
    expect(appDelete).toBeGreaterThan(dnsDelete);
    expectAlwaysGated(team, t.hostname);
  });

  it('leaves no Access object behind when a lapsed tunnel is reaped', async () => {
    const owner = user();
    const t = await created(team, owner, { mode: 'public' });
    await makeDue(team, t.tunnelId);
    expect((await team.app.reaper!.sweep()).ended).toBe(1);
    expect(ownObjects(team, t.tunnelId)).toEqual([]);
  });

  it('rolls a failed create back, its Access objects included', async () => {
    const remove = team.emulator.injectFault({ endpoint: 'dns.create', kind: 'error5xx', status: 500 });
    try {
      const owner = user();
      const res = await create(team, owner, { mode: 'emails', emails: ['a@x.example'] });
      expect(res.statusCode).toBeGreaterThanOrEqual(500);
      const row = await team.app.prisma.tunnel.findFirst({ where: { ownerId: owner } });
      expect(row?.status).toBe('ended');
      expect(ownObjects(team, row!.id)).toEqual([]);
    } finally {
      remove();
    }
  });

  it('rolls back, by name, an Access application and policy whose create answers were lost and could not be looked up', async () => {
    // The creates happen but their answers are lost, and the lookups that would adopt them fail:
    // the create fails without knowing the ids, and its rollback must find them by name.
    const faults = [
      team.emulator.injectFault({ endpoint: 'access.app.create', kind: 'lostResponse' }),
      team.emulator.injectFault({ endpoint: 'access.policy.create', kind: 'lostResponse' }),
      team.emulator.injectFault({ endpoint: 'access.app.list', kind: 'error5xx', status: 503 }),
      team.emulator.injectFault({ endpoint: 'access.policy.list', kind: 'error5xx', status: 503 }),
    ];
    const owner = user();
    let rowId: string;
    try {
      const res = await create(team, owner, { mode: 'emails', emails: ['a@x.example'] });
      expect(res.statusCode).toBe(503);
      const row = await team.app.prisma.tunnel.findFirstOrThrow({ where: { ownerId: owner } });
      rowId = row.id;
      expect(ownObjects(team, rowId)).toHaveLength(2);
    } finally {
      for (const remove of faults) remove();
    }
    // The rollback could not look them up meanwhile: it stays ending, and the reaper finishes it.
    await makeDue(team, rowId);
    await team.app.reaper!.sweep();
    const row = await team.app.prisma.tunnel.findUniqueOrThrow({ where: { id: rowId } });
    expect(row.status).toBe('ended');
    expect(ownObjects(team, rowId)).toEqual([]);
    expect(team.emulator.liveTunnels().some((t) => t.name === `tb-${rowId}`)).toBe(false);
  });

  it('adopts, on retry, an Access application whose create answer was lost', async () => {
    const remove = team.emulator.injectFault({ endpoint: 'access.app.create', kind: 'lostResponse', times: 1 });
    try {
      const t = await created(team, user(), { mode: 'public' });
      expect(ownObjects(team, t.tunnelId)).toHaveLength(1);
      expect(team.emulator.audience(t.hostname)).toMatchObject({ gate: 'public' });
    } finally {
      remove();
    }
  });

  it('answers 400 INVALID_INPUT for anything else', async () => {
    for (const access of [{ mode: 'friends' }, { mode: 'emails' }, { mode: 'emails', emails: [] }, { mode: 'emails', emails: ['not-an-address'] },
      { mode: 'emails', emails: Array.from({ length: 21 }, (_, i) => `u${i}@x.example`) }, { mode: 'team', emails: ['a@x.example'] }, 'team', null]) {
      const res = await create(team, user(), access);
      expect(res.statusCode, JSON.stringify(access)).toBe(400);
      expect(res.json().code).toBe('INVALID_INPUT');
    }
  });
});

describe('Access when public tunnels are forbidden', () => {
  it('answers 403 ACCESS_PUBLIC_FORBIDDEN to a public create or change', async () => {
    const owner = user();
    const res = await create(closed, owner, { mode: 'public' });
    expect(res.statusCode).toBe(403);
    expect(res.json().code).toBe('ACCESS_PUBLIC_FORBIDDEN');
    const t = await created(closed, owner);
    expect(t.access).toEqual({ mode: 'team' });
    const changed = await patch(closed, owner, t.tunnelId, { mode: 'public' });
    expect(changed.statusCode).toBe(403);
    expect(changed.json().code).toBe('ACCESS_PUBLIC_FORBIDDEN');
  });
});

describe('Access without any ACCESS_ setting', () => {
  it('creates exactly as before: public, and not one Access request', async () => {
    const t = await created(plain, user());
    expect(t.access).toEqual({ mode: 'public' });
    expect(plain.emulator.requests.filter((r) => r.endpoint.startsWith('access.'))).toEqual([]);
    expect(plain.emulator.audience(t.hostname)).toEqual({ gate: 'none' });
  });

  it('refuses `team` when there is no team, and still gates `emails`', async () => {
    const res = await create(plain, user(), { mode: 'team' });
    expect(res.statusCode).toBe(400);
    const t = await created(plain, user(), { mode: 'emails', emails: ['a@x.example'] });
    expect(plain.emulator.canOpen(t.hostname, 'a@x.example')).toBe(true);
    expect(plain.emulator.canOpen(t.hostname, null)).toBe(false);
    expectAlwaysGated(plain, t.hostname);
  });
});
