/**
 * Cloudflare refuses a tunnel create although the broker's own count says the account has
 * room: tunnels made outside the broker fill it. Cloudflare documents the limit (1,000 per
 * account) but no error code for reaching it, so the broker counts the account's tunnels
 * after an unrecognised refusal: full means the same answer as when the broker knew first.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { type CloudflareEmulator, startCloudflareEmulator } from '../../src/cloudflare/emulator/emulator.js';
import { startTestBroker, TEST_DOMAIN, type TestBroker } from '../helpers/broker.js';
import { createTestDatabase } from '../helpers/database.js';
import { testKeyPrefix } from '../helpers/redis-keys.js';

const opened: Array<{ broker: TestBroker; emulator: CloudflareEmulator }> = [];
afterAll(async () => {
  for (const { broker, emulator } of opened) {
    await broker.close();
    await emulator.close();
  }
});

/** A broker whose own capacity is `brokerCapacity`, on an account Cloudflare caps at 3 that already holds one tunnel the broker did not make. */
async function crowdedAccount(brokerCapacity: number) {
  const emulator = await startCloudflareEmulator({ zoneName: TEST_DOMAIN, maxTunnels: 3 });
  const broker = await startTestBroker({ shared: { db: await createTestDatabase(), emulator, redisKeyPrefix: testKeyPrefix() }, env: { CLOUDFLARE_MAX_TUNNELS: String(brokerCapacity) } });
  opened.push({ broker, emulator });
  const foreign = await fetch(`${emulator.url}/accounts/${emulator.accountId}/cfd_tunnel`, {
    method: 'POST',
    headers: { authorization: `Bearer ${emulator.apiToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'made-by-someone-else', config_src: 'cloudflare' }),
  });
  expect(foreign.status).toBe(200);
  const userId = `user-${randomUUID()}`;
  const create = () => broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(userId), payload: { port: 3000 } });
  for (let i = 0; i < 2; i++) expect((await create()).statusCode).toBe(201);
  return { broker, emulator, create };
}

describe('a Cloudflare account filled by tunnels the broker did not make', () => {
  it('answers 503 TUNNEL_CAPACITY_EXHAUSTED with Retry-After, as when the broker knows first, and leaves nothing behind', async () => {
    const { broker, emulator, create } = await crowdedAccount(3);
    const lists = emulator.count('tunnel.list');
    const res = await create();
    expect(res.statusCode, res.body).toBe(503);
    expect(res.json()).toMatchObject({ code: 'TUNNEL_CAPACITY_EXHAUSTED' });
    expect(res.headers['retry-after']).toBe('65');
    // One count of the account after the refusal, and nothing made: 3 tunnels, 2 records.
    expect(emulator.count('tunnel.list') - lists).toBe(1);
    expect(emulator.liveTunnels()).toHaveLength(3);
    expect(emulator.dnsRecords().filter((r) => r.type === 'CNAME')).toHaveLength(2);
    const failed = await broker.app.prisma.tunnel.findMany({ where: { endReason: 'create_failed' } });
    expect(failed.map((t) => t.status)).toEqual(['ended']);
  });

  it('keeps any other refusal an upstream error: an account with fewer tunnels than its capacity is not full', async () => {
    // The broker believes in 5, Cloudflare stops at 3: the count (3 < 5) does not say full.
    const { create } = await crowdedAccount(5);
    const res = await create();
    expect(res.statusCode, res.body).toBe(502);
    expect(res.json()).toMatchObject({ code: 'UPSTREAM_ERROR' });
  });
});
