import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeDue, startTestBroker, TEST_DOMAIN, type TestBroker } from '../helpers/broker.js';
import { CLI_TEST_TIMEOUT_MS, cliEnv, cliRunner } from '../helpers/cli.js';

const runCli = cliRunner();

let broker: TestBroker;
let env: Record<string, string>;
beforeAll(async () => {
  // A TTL far longer than the file runs: no tunnel lapses unless a test makes it due.
  broker = await startTestBroker({ env: { TUNNEL_TTL_SECONDS: '3600' } });
  env = cliEnv(broker);
});
afterAll(async () => {
  await broker?.close();
});

async function create(userId: string, requestedSlug?: string) {
  const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 4000, ...(requestedSlug ? { requestedSlug } : {}) } });
  expect(res.statusCode).toBe(201);
  const body = res.json() as { tunnelId: string; hostname: string; cloudflaredToken: string };
  const row = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: body.tunnelId } });
  return { id: body.tunnelId, hostname: body.hostname, cloudflaredToken: body.cloudflaredToken, cfTunnelId: row.cfTunnelId!, dnsRecordId: row.dnsRecordId! };
}

const user = () => `user-${randomUUID().slice(0, 8)}`;
const events = (tunnelId: string) =>
  broker.app.prisma.tunnelEvent.findMany({ where: { tunnelId }, orderBy: { id: 'asc' } }).then((es) => es.map((e) => [e.type, e.actor]));
const upstreamGone = (t: { cfTunnelId: string; dnsRecordId: string }) =>
  !broker.emulator.liveTunnels().some((u) => u.id === t.cfTunnelId) && !broker.emulator.dnsRecords().some((r) => r.id === t.dnsRecordId);

interface ListedJson {
  total: number;
  tunnels: Array<{ id: string; ownerId: string; status: string; endReason: string | null; expiresAt: string | null; events?: Array<{ type: string; actor: string; details: Record<string, unknown> }> }>;
}

describe('tunnels list', { timeout: CLI_TEST_TIMEOUT_MS }, () => {
  it("shows every user's live tunnels in a table, --user narrows it, --json carries the same rows", async () => {
    const [alice, bob] = [user(), user()];
    const a = await create(alice);
    const b = await create(bob);
    const ended = await create(alice);
    expect((await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${ended.id}`, headers: broker.auth(alice) })).statusCode).toBe(204);

    const [table, asJson] = await Promise.all([
      runCli(['tunnels', 'list'], env),
      runCli(['tunnels', 'list', '--user', bob, '--json'], env),
    ]);

    expect(table).toMatchObject({ code: 0, stderr: '' });
    expect(table.stdout.split('\n')[0]).toMatch(/^ID\s+USER\s+HOSTNAME\s+PORT\s+STATUS\s+CREATED\s+EXPIRES$/);
    const line = (id: string) => table.stdout.split('\n').find((l) => l.startsWith(id));
    expect(line(a.id)).toMatch(new RegExp(`^${a.id}\\s+${alice}\\s+${a.hostname.replaceAll('.', '\\.')}\\s+4000\\s+active\\s+\\S+Z\\s+in \\d+m$`));
    expect(line(b.id)).toContain(bob);
    expect(line(ended.id)).toBeUndefined();

    const listed = JSON.parse(asJson.stdout) as ListedJson;
    expect(listed.total).toBe(1);
    expect(listed.tunnels).toEqual([expect.objectContaining({ id: b.id, ownerId: bob, status: 'active', expiresAt: expect.any(String) })]);
    expect(listed.tunnels[0]!.events).toBeUndefined();
    // Listing never shows a connector token.
    for (const run of [table, asJson]) expect(run.stdout).not.toContain(b.cloudflaredToken);
  });

  it('--all adds ended tunnels and the history of each, oldest event first', async () => {
    const carol = user();
    const live = await create(carol);
    const ended = await create(carol);
    expect((await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${ended.id}`, headers: broker.auth(carol) })).statusCode).toBe(204);

    const [text, asJson] = await Promise.all([
      runCli(['tunnels', 'list', '--all', '--user', carol], env),
      runCli(['tunnels', 'list', '--all', '--user', carol, '--json'], env),
    ]);

    const listed = JSON.parse(asJson.stdout) as ListedJson;
    expect(listed.tunnels.map((t) => [t.id, t.status, t.endReason])).toEqual([[ended.id, 'ended', 'deleted'], [live.id, 'active', null]]);
    const history = Object.fromEntries(listed.tunnels.map((t) => [t.id, t.events!.map((e) => [e.type, e.actor])]));
    expect(history[live.id]).toEqual([['created', `user:${carol}`]]);
    expect(history[ended.id]).toEqual([['created', `user:${carol}`], ['delete_requested', `user:${carol}`], ['ended', `user:${carol}`]]);
    expect(listed.tunnels[0]!.events![2]!.details).toEqual({ reason: 'deleted' });

    expect(text.code).toBe(0);
    expect(text.stdout.split('\n')[0]).toMatch(/\sENDED\s+REASON$/);
    expect(text.stdout).toMatch(new RegExp(`^${ended.id}\\s.*\\sended\\s.*\\sdeleted$`, 'm'));
    const section = text.stdout.slice(text.stdout.indexOf(`\n${ended.id}  ${ended.hostname}\n`));
    expect(section).toMatch(/^ {2}\S+Z\s+created\s+user:\S+\s+\{.*"hostname":"[^"]+".*\}$/m);
    expect(section).toMatch(/^ {2}\S+Z\s+ended\s+user:\S+\s+\{"reason":"deleted"\}$/m);
    expect(text.stdout).toMatch(/^2 tunnels$/m);
  });

  it('--limit keeps the newest and says how many there are', async () => {
    const dave = user();
    await create(dave);
    const newest = await create(dave);
    const run = await runCli(['tunnels', 'list', '--user', dave, '--limit', '1'], env);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(newest.id);
    expect(run.stdout).toMatch(/showing the newest 1 of 2 tunnels/);
  });
});

describe('tunnels end', { timeout: CLI_TEST_TIMEOUT_MS }, () => {
  it('by id: ends it upstream, marks the row ended, and records the operator', async () => {
    const erin = user();
    const t = await create(erin);

    const run = await runCli(['tunnels', 'end', t.id, '--as', 'jane'], env);

    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(run.stdout).toBe(`ended ${t.id} (${t.hostname}, user ${erin})\n`);
    expect(upstreamGone(t)).toBe(true);
    const row = await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: t.id } });
    expect(row).toMatchObject({ status: 'ended', endReason: 'deleted' });
    expect(await events(t.id)).toEqual([['created', `user:${erin}`], ['delete_requested', 'operator:jane'], ['ended', 'operator:jane']]);
    // The owner sees it gone.
    expect((await broker.app.inject({ method: 'GET', url: `/v1/tunnels/${t.id}`, headers: broker.auth(erin) })).statusCode).toBe(404);
  });

  it('by hostname and by slug, the same way', async () => {
    const frank = user();
    const byHostname = await create(frank, `h-${randomUUID().slice(0, 8)}`);
    const bySlug = await create(frank, `s-${randomUUID().slice(0, 8)}`);
    const slug = bySlug.hostname.slice(0, -(TEST_DOMAIN.length + 1));

    const [first, second] = await Promise.all([
      runCli(['tunnels', 'end', byHostname.hostname.toUpperCase(), '--as', 'jane', '--json'], env),
      runCli(['tunnels', 'end', slug, '--as', 'jane'], env),
    ]);

    expect(first.code).toBe(0);
    expect(JSON.parse(first.stdout)).toEqual({ id: byHostname.id, hostname: byHostname.hostname, ownerId: frank, outcome: 'ended' });
    expect(second.code).toBe(0);
    expect(second.stdout).toContain(`ended ${bySlug.id}`);
    for (const t of [byHostname, bySlug]) {
      expect(upstreamGone(t)).toBe(true);
      expect(await events(t.id)).toEqual([['created', `user:${frank}`], ['delete_requested', 'operator:jane'], ['ended', 'operator:jane']]);
    }
  });

  it('says "not found" on stderr with exit 3 for an unknown id or hostname; an ended tunnel is already ended', async () => {
    const gina = user();
    const t = await create(gina);
    expect((await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${t.id}`, headers: broker.auth(gina) })).statusCode).toBe(204);
    const unknownId = randomUUID();

    const [byId, byEndedHostname, ended] = await Promise.all([
      runCli(['tunnels', 'end', unknownId], env),
      // Its hostname names no live tunnel any more.
      runCli(['tunnels', 'end', t.hostname], env),
      runCli(['tunnels', 'end', t.id], env),
    ]);

    expect(byId).toMatchObject({ code: 3, stdout: '', stderr: `error: no tunnel with id ${unknownId}\n` });
    expect(byEndedHostname).toMatchObject({ code: 3, stdout: '', stderr: `error: no live tunnel with hostname ${t.hostname}\n` });
    expect(ended.code).toBe(0);
    expect(ended.stdout).toMatch(new RegExp(`^${t.id} \\(${t.hostname.replaceAll('.', '\\.')}\\) had already ended at \\S+Z\\n$`));
    // Nothing new happened to it.
    expect(await events(t.id)).toEqual([['created', `user:${gina}`], ['delete_requested', `user:${gina}`], ['ended', `user:${gina}`]]);
  });

  it('when Cloudflare fails: exit 1, the reason on stderr, the tunnel left ending for the reaper, the failure recorded', async () => {
    const hank = user();
    const t = await create(hank);
    const remove = broker.emulator.injectFault({ kind: 'error5xx', endpoint: 'tunnel.delete', status: 500 });
    try {
      const run = await runCli(['tunnels', 'end', t.id, '--as', 'jane'], { ...env, CLOUDFLARE_MAX_RETRIES: '0' });
      expect(run.code).toBe(1);
      expect(run.stdout).toBe('');
      expect(run.stderr).toBe(`error: Cloudflare did not remove ${t.hostname} (tunnel.delete: UPSTREAM_ERROR). The tunnel stays \`ending\`; the reaper retries. --log-level warn shows the upstream error.\n`);
    } finally {
      remove();
    }
    expect((await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: t.id } })).status).toBe('ending');
    expect(await events(t.id)).toEqual([['created', `user:${hank}`], ['delete_requested', 'operator:jane'], ['end_failed', 'operator:jane']]);

    // The reaper finishes it once Cloudflare answers again.
    await makeDue(broker, t.id);
    expect((await broker.app.reaper!.sweep()).ended).toBe(1);
    expect((await broker.app.prisma.tunnel.findUniqueOrThrow({ where: { id: t.id } })).status).toBe('ended');
    expect(upstreamGone(t)).toBe(true);
    expect((await events(t.id)).at(-1)).toEqual(['ended', 'reaper']);
  });
});
