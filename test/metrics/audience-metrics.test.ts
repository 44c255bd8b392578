import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { useTestBroker } from '../helpers/broker.js';

const broker = useTestBroker({ env: { ACCESS_TEAM_EMAIL_DOMAINS: 'team.example' } });

function audienceCount(text: string, audience: string): number {
  return Number(new RegExp(`^tunnel_broker_live_tunnels_by_audience\\{audience="${audience}"\\} (\\S+)$`, 'm').exec(text)?.[1]);
}

describe('metrics by audience', () => {
  it('counts live tunnels by who may open them: team, public, emails', async () => {
    const user = `user-${randomUUID()}`;
    for (const access of [undefined, undefined, { mode: 'public' }, { mode: 'emails', emails: ['a@x.example'] }]) {
      const res = await broker.app.inject({ method: 'POST', url: '/v1/tunnels', headers: broker.auth(user), payload: { port: 3000, ...(access ? { access } : {}) } });
      expect(res.statusCode).toBe(201);
    }
    const text = (await broker.app.inject({ method: 'GET', url: '/metrics' })).body;
    expect(audienceCount(text, 'team')).toBe(2);
    expect(audienceCount(text, 'public')).toBe(1);
    expect(audienceCount(text, 'emails')).toBe(1);
  });
});
