import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RANDOM_SLUG_ATTEMPTS } from '../../src/tunnels/slug.js';
import { startTestBroker, type TestBroker } from '../helpers/broker.js';

const TAKEN = `taken-${randomUUID().slice(0, 8)}`;
let draws = 0;
let broker: TestBroker;
beforeAll(async () => {
  // A random source stuck on one value stands in for a slug space that is full.
  broker = await startTestBroker({ randomSlug: () => { draws++; return TAKEN; } });
});
afterAll(async () => {
  await broker?.close();
});

it('answers 503 SLUG_EXHAUSTED after a bounded number of random slugs are all taken', async () => {
  const first = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth('u1'), payload: { port: 3000 } });
  expect(first.statusCode).toBe(201);
  expect(first.json().slug).toBe(TAKEN);

  draws = 0;
  const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth('u2'), payload: { port: 3000 } });
  expect(res.statusCode).toBe(503);
  expect(res.json().code).toBe('SLUG_EXHAUSTED');
  expect(draws).toBe(RANDOM_SLUG_ATTEMPTS);
  // No quota was consumed and nothing was made upstream.
  expect(await broker.app.prisma.tunnel.count({ where: { ownerId: 'u2' } })).toBe(0);
  expect(broker.emulator.liveTunnels()).toHaveLength(1);
});
