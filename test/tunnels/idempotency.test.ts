import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canonicalCreateRequest, idempotencyRedisKey, IdempotencyStore } from '../../src/tunnels/idempotency.js';
import { eventually, startTestBroker, TEST_JWT_SECRET, type TestBroker, useTestBroker } from '../helpers/broker.js';

// A 1 s lease: the claim must outlive it by being renewed while a slower create runs.
const broker = useTestBroker({ env: { TUNNEL_LEASE_SECONDS: '1' } });

const user = () => `user-${randomUUID()}`;
const newKey = () => `key-${randomUUID()}`;

function create(b: TestBroker, userId: string, payload: unknown, key?: string) {
  return b.app.inject({
    method: 'POST',
    url: '/v1/tunnels',
    headers: { ...b.auth(userId), 'content-type': 'application/json', ...(key === undefined ? {} : { 'idempotency-key': key }) },
    payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
  });
}

const creates = () => broker.emulator.count('tunnel.create');
const rowsOf = (ownerId: string) => broker.app.prisma.tunnel.findMany({ where: { ownerId } });

describe('Idempotency-Key on POST /v1/tunnels', () => {
  it('replays the first 201 byte for byte, token included, without creating anything upstream', async () => {
    const userId = user();
    const key = newKey();
    const before = creates();
    const first = await create(broker, userId, { port: 3000 }, key);
    expect(first.statusCode).toBe(201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    const again = await create(broker, userId, { port: 3000 }, key);
    expect(again.statusCode).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.headers['content-type']).toBe(first.headers['content-type']);
    expect(again.body).toBe(first.body);
    expect(again.json().cloudflaredToken).toBe(first.json().cloudflaredToken);

    expect(creates()).toBe(before + 1);
    expect(await rowsOf(userId)).toHaveLength(1);
    // Replaying does not put the token in a log line either.
    expect(broker.logs.raw).not.toContain(first.json().cloudflaredToken);
  });

  it('treats key order, whitespace, unknown fields and slug case as the same request', async () => {
    const userId = user();
    const key = newKey();
    const slug = `same-${randomUUID().slice(0, 8)}`;
    const first = await create(broker, userId, `{"port":3000,"requestedSlug":"${slug}"}`, key);
    expect(first.statusCode).toBe(201);
    const before = creates();
    const reordered = await create(broker, userId, `{\n  "requestedSlug" : "${slug.toUpperCase()}",\n\t"port": 3000.0, "colour": "blue"\n}`, key);
    expect(reordered.statusCode).toBe(201);
    expect(reordered.headers['idempotent-replayed']).toBe('true');
    expect(reordered.body).toBe(first.body);
    expect(creates()).toBe(before);
  });

  it('answers 422 IDEMPOTENCY_KEY_REUSED for the same key with a different body, and creates nothing', async () => {
    const userId = user();
    const key = newKey();
    expect((await create(broker, userId, { port: 3000 }, key)).statusCode).toBe(201);
    const before = creates();
    for (const other of [{ port: 3001 }, { port: 3000, requestedSlug: `other-${randomUUID().slice(0, 8)}` }]) {
      const res = await create(broker, userId, other, key);
      expect(res.statusCode).toBe(422);
      expect(res.json()).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED', message: expect.any(String) });
    }
    expect(creates()).toBe(before);
    expect(await rowsOf(userId)).toHaveLength(1);
  });

  it('keeps users apart: the same key from two users is two independent requests', async () => {
    const key = newKey();
    const [alice, bob] = [user(), user()];
    const a = await create(broker, alice, { port: 3000 }, key);
    const b = await create(broker, bob, { port: 3000 }, key);
    expect([a.statusCode, b.statusCode]).toEqual([201, 201]);
    expect(b.headers['idempotent-replayed']).toBeUndefined();
    expect(b.json().tunnelId).not.toBe(a.json().tunnelId);
    expect(b.json().cloudflaredToken).not.toBe(a.json().cloudflaredToken);
    // A different body under Bob's key is not a reuse of Alice's.
    const carol = user();
    expect((await create(broker, carol, { port: 4000 }, key)).statusCode).toBe(201);
    // And Alice still gets her own response.
    const replay = await create(broker, alice, { port: 3000 }, key);
    expect(replay.body).toBe(a.body);
  });

  it('lets exactly one of five concurrent duplicates create; the others replay it or are told to retry', async () => {
    const userId = user();
    const key = newKey();
    const before = creates();
    // Slow the upstream create so the duplicates overlap the first one.
    const remove = broker.emulator.injectFault({ endpoint: 'tunnel.create', kind: 'latency', latencyMs: 300, times: 1 });
    const responses = await Promise.all(Array.from({ length: 5 }, () => create(broker, userId, { port: 3000 }, key)));
    remove();
    expect(creates()).toBe(before + 1);
    expect(await rowsOf(userId)).toHaveLength(1);
    const created = responses.filter((r) => r.statusCode === 201);
    expect(created.length).toBeGreaterThanOrEqual(1);
    for (const res of created) expect(res.body).toBe(created[0]!.body);
    for (const res of responses.filter((r) => r.statusCode !== 201)) {
      expect(res.statusCode).toBe(409);
      expect(res.json().code).toBe('IDEMPOTENCY_KEY_IN_USE');
      expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    }
    // The client that was told to retry gets the same tunnel.
    const retried = await create(broker, userId, { port: 3000 }, key);
    expect(retried.body).toBe(created[0]!.body);
  });

  it('answers 409 IDEMPOTENCY_KEY_IN_USE with Retry-After while the first request runs, under a short claim renewed while it runs', async () => {
    const userId = user();
    const key = newKey();
    const redisKey = idempotencyRedisKey({ userId, key });
    const remove = broker.emulator.injectFault({ endpoint: 'tunnel.create', kind: 'latency', latencyMs: 2_500, times: 1 });
    const first = create(broker, userId, { port: 3000 }, key);
    try {
      await eventually(async () => (await broker.redis.exists(redisKey)) === 1, { what: 'the claim' });
      // A broker that dies now leaves this claim behind: it expires within one lease.
      const pttl = await broker.redis.pttl(redisKey);
      expect(pttl).toBeGreaterThan(0);
      expect(pttl).toBeLessThanOrEqual(broker.app.tunnels.leaseMs);
      // Its holder renews it: two leases later, with the create still running, it is still there.
      const claimedAt = Date.now();
      await eventually(() => Date.now() - claimedAt >= 2 * broker.app.tunnels.leaseMs, { timeoutMs: 5_000, what: 'two leases' });
      expect(await broker.redis.pttl(redisKey)).toBeGreaterThan(0);

      const duplicate = await create(broker, userId, { port: 3000 }, key);
      expect(duplicate.statusCode).toBe(409);
      expect(duplicate.json()).toMatchObject({ code: 'IDEMPOTENCY_KEY_IN_USE', message: expect.any(String) });
      expect(duplicate.headers['retry-after']).toBe('1');
      // A different body is a reuse even while the first is running.
      expect((await create(broker, userId, { port: 3001 }, key)).statusCode).toBe(422);
    } finally {
      remove();
    }
    const done = await first;
    expect(done.statusCode).toBe(201);
    const replay = await create(broker, userId, { port: 3000 }, key);
    expect(replay.body).toBe(done.body);
  });

  it('frees a claim left behind by a broker that died mid-create, so the retry runs', async () => {
    const userId = user();
    const key = newKey();
    // What a dead broker leaves: a pending claim for this request (with a short TTL here).
    const dead = new IdempotencyStore(broker.redis, { secret: TEST_JWT_SECRET, ttlSeconds: 60, pendingTtlMs: 400 });
    const claim = await dead.claim({ userId, key }, dead.fingerprint(canonicalCreateRequest({ port: 3000 })));
    expect(claim.kind).toBe('claimed');

    expect((await create(broker, userId, { port: 3000 }, key)).statusCode).toBe(409);
    const res = await eventually(async () => {
      const attempt = await create(broker, userId, { port: 3000 }, key);
      return attempt.statusCode === 409 ? undefined : attempt;
    }, { timeoutMs: 5_000, intervalMs: 100, what: 'the abandoned claim to expire' });
    expect(res.statusCode).toBe(201);
    expect(res.headers['idempotent-replayed']).toBeUndefined();
  });

  it('does not store a transient failure: after a 502 the same key creates the tunnel', async () => {
    const userId = user();
    const key = newKey();
    const redisKey = idempotencyRedisKey({ userId, key });
    const remove = broker.emulator.injectFault({ endpoint: 'tunnel.create', kind: 'error5xx', status: 500, times: 1 });
    const failed = await create(broker, userId, { port: 3000 }, key);
    remove();
    expect(failed.statusCode).toBe(502);
    expect(failed.json().code).toBe('UPSTREAM_ERROR');
    expect(await broker.redis.exists(redisKey)).toBe(0);

    const before = creates();
    const retried = await create(broker, userId, { port: 3000 }, key);
    expect(retried.statusCode).toBe(201);
    expect(retried.headers['idempotent-replayed']).toBeUndefined();
    expect(creates()).toBe(before + 1);
    expect((await create(broker, userId, { port: 3000 }, key)).body).toBe(retried.body);
  });

  it('does not store a slug conflict: once the slug is free, the same key creates the tunnel', async () => {
    const slug = `contested-${randomUUID().slice(0, 8)}`;
    const holder = user();
    const held = await create(broker, holder, { port: 3000, requestedSlug: slug });
    expect(held.statusCode).toBe(201);
    const userId = user();
    const key = newKey();
    const conflict = await create(broker, userId, { port: 3000, requestedSlug: slug }, key);
    expect(conflict.statusCode).toBe(409);
    expect(conflict.json().code).toBe('TUNNEL_SLUG_CONFLICT');

    const del = await broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${held.json().tunnelId}`, headers: broker.auth(holder) });
    expect(del.statusCode).toBe(204);
    const retried = await create(broker, userId, { port: 3000, requestedSlug: slug }, key);
    expect(retried.statusCode).toBe(201);
    expect(retried.json().slug).toBe(slug);
  });

  it('replays a deterministic 400 from the service, and refuses the key for another body', async () => {
    const userId = user();
    const key = newKey();
    const first = await create(broker, userId, { port: 70_000 }, key);
    expect(first.statusCode).toBe(400);
    expect(first.json().code).toBe('INVALID_PORT');
    const again = await create(broker, userId, { port: 70_000 }, key);
    expect(again.statusCode).toBe(400);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body).toBe(first.body);
    const other = await create(broker, userId, { port: 3000 }, key);
    expect(other.statusCode).toBe(422);
    expect(other.json().code).toBe('IDEMPOTENCY_KEY_REUSED');
  });

  it('does not claim the key for a body the schema rejects (nothing was executed)', async () => {
    const userId = user();
    const key = newKey();
    const invalid = await create(broker, userId, { port: '3000' }, key);
    expect(invalid.statusCode).toBe(400);
    expect(invalid.json().code).toBe('INVALID_INPUT');
    expect(await broker.redis.exists(idempotencyRedisKey({ userId, key }))).toBe(0);
    expect((await create(broker, userId, { port: 3000 }, key)).statusCode).toBe(201);
  });

  describe('key format', () => {
    const invalid: Array<[string, string]> = [
      ['empty', ''],
      ['256 characters', 'k'.repeat(256)],
      ['non-ASCII', 'caf\u00e9'],
      ['a tab', 'a\tb'],
      ['a control character', 'a\u0001b'],
      ['DEL', 'a\u007fb'],
    ];
    for (const [name, key] of invalid) {
      it(`rejects a key that is ${name} with 400 INVALID_INPUT, before creating anything`, async () => {
        const before = creates();
        const res = await create(broker, user(), { port: 3000 }, key);
        expect(res.statusCode).toBe(400);
        expect(res.json()).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringMatching(/idempotency-key/i) });
        expect(creates()).toBe(before);
      });
    }

    it('accepts 255 printable characters, spaces and punctuation included', async () => {
      const printable = Array.from({ length: 0x7e - 0x20 + 1 }, (_, i) => String.fromCharCode(0x20 + i)).join('');
      for (const key of ['x'.repeat(255), `a${printable}z`]) {
        const userId = user();
        const first = await create(broker, userId, { port: 3000 }, key);
        expect(first.statusCode).toBe(201);
        expect((await create(broker, userId, { port: 3000 }, key)).body).toBe(first.body);
      }
    });
  });

  it('stores the response encrypted: neither the token, its secret nor the tunnel is readable in Redis', async () => {
    const userId = user();
    const key = newKey();
    const created = await create(broker, userId, { port: 3000 }, key);
    expect(created.statusCode).toBe(201);
    const { cloudflaredToken, tunnelId, hostname } = created.json();
    const secret = JSON.parse(Buffer.from(cloudflaredToken, 'base64').toString('utf8')).s as string;

    const redisKey = idempotencyRedisKey({ userId, key });
    const stored = await broker.redis.get(redisKey);
    expect(stored).toBeTruthy();
    const record = JSON.parse(stored!);
    expect(record).toMatchObject({ state: 'done', iv: expect.any(String), tag: expect.any(String), data: expect.any(String) });
    // Not merely encoded: the decoded payload holds none of it either.
    const payload = Buffer.from(record.data, 'base64').toString('latin1');
    for (const clear of [cloudflaredToken, secret, tunnelId, hostname, userId, key]) {
      expect(stored).not.toContain(clear);
      expect(payload).not.toContain(clear);
    }
    const ttl = await broker.redis.ttl(redisKey);
    expect(ttl).toBeGreaterThan(broker.config.idempotency.ttlSeconds - 60);
    expect(ttl).toBeLessThanOrEqual(broker.config.idempotency.ttlSeconds);

    // A record tampered with is not replayed (GCM authenticates it).
    const data = Buffer.from(record.data, 'base64');
    data[0] = data[0]! ^ 1;
    await broker.redis.set(redisKey, JSON.stringify({ ...record, data: data.toString('base64') }), 'KEEPTTL');
    const res = await create(broker, userId, { port: 3000 }, key);
    expect(res.statusCode).toBe(422);
    expect(res.body).not.toContain(cloudflaredToken);
  });
});

describe('Idempotency-Key expiry', () => {
  let short: TestBroker;
  beforeAll(async () => {
    short = await startTestBroker({ env: { IDEMPOTENCY_TTL_SECONDS: '1' } });
  });
  afterAll(async () => {
    await short?.close();
  });

  it('replays within IDEMPOTENCY_TTL_SECONDS and runs the request again after it', async () => {
    const userId = user();
    const key = newKey();
    const first = await create(short, userId, { port: 3000 }, key);
    expect(first.statusCode).toBe(201);
    const redisKey = idempotencyRedisKey({ userId, key });
    expect(await short.redis.pttl(redisKey)).toBeLessThanOrEqual(1_000);

    await eventually(async () => (await short.redis.exists(redisKey)) === 0, { timeoutMs: 5_000, what: 'the stored response to expire' });
    const before = short.emulator.count('tunnel.create');
    const after = await create(short, userId, { port: 3000 }, key);
    expect(after.statusCode).toBe(201);
    expect(after.headers['idempotent-replayed']).toBeUndefined();
    expect(after.json().tunnelId).not.toBe(first.json().tunnelId);
    expect(short.emulator.count('tunnel.create')).toBe(before + 1);
  });
});

describe('DELETE /v1/tunnels/:id is idempotent', () => {
  it('answers 204 to every delete of one tunnel, concurrent or repeated, and ends it once', async () => {
    const userId = user();
    const created = await create(broker, userId, { port: 3000 });
    expect(created.statusCode).toBe(201);
    const { tunnelId } = created.json();
    const del = () => broker.app.inject({ method: 'DELETE', url: `/v1/tunnels/${tunnelId}`, headers: broker.auth(userId) });
    const concurrent = await Promise.all([del(), del(), del()]);
    expect(concurrent.map((r) => r.statusCode)).toEqual([204, 204, 204]);
    const upstreamDeletes = broker.emulator.count('tunnel.delete');
    expect((await del()).statusCode).toBe(204);
    // Once ended, a repeat does not touch Cloudflare at all.
    expect(broker.emulator.count('tunnel.delete')).toBe(upstreamDeletes);
    expect(broker.logs.events('tunnel.deleted').filter((l) => l.tunnelId === tunnelId)).toHaveLength(1);
    expect(await rowsOf(userId)).toMatchObject([{ status: 'ended', endReason: 'deleted' }]);
  });
});
