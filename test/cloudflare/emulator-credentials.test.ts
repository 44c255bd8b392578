import Cloudflare from 'cloudflare';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CloudflareEmulator, startCloudflareEmulator } from '../../src/cloudflare/emulator/emulator.js';

// The endpoints `tunnel-broker doctor` reads: token verification (user and account forms) and the zone.
let emu: CloudflareEmulator;
beforeAll(async () => {
  emu = await startCloudflareEmulator({ zoneName: 'tunnels.example.com' });
});
afterAll(async () => {
  await emu?.close();
});

const client = (apiToken = emu.apiToken) => new Cloudflare({ apiToken, baseURL: emu.url, maxRetries: 0 });
const OTHER_ID = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';

describe('credential endpoints', () => {
  it('verifies the token, as a user token and under its account, with a stable id', async () => {
    const user = await client().user.tokens.verify();
    const account = await client().accounts.tokens.verify({ account_id: emu.accountId });
    expect(user).toEqual({ id: expect.stringMatching(/^[0-9a-f]{32}$/), status: 'active' });
    expect(account).toEqual(user);
    expect(emu.requests.slice(-2).map((r) => [r.endpoint, r.status])).toEqual([['user.tokens.verify', 200], ['account.tokens.verify', 200]]);
  });

  it('returns the zone, with its name and account', async () => {
    const zone = await client().zones.get({ zone_id: emu.zoneId });
    expect(zone).toMatchObject({ id: emu.zoneId, name: 'tunnels.example.com', status: 'active', account: { id: emu.accountId } });
  });

  it('refuses another token (403, 10000), another account or zone (403, 9109)', async () => {
    const refused = async (call: Promise<unknown>) => {
      const error = await call.catch((e: unknown) => e);
      expect(error).toBeInstanceOf(Cloudflare.APIError);
      return { status: (error as InstanceType<typeof Cloudflare.APIError>).status, codes: (error as InstanceType<typeof Cloudflare.APIError>).errors.map((e) => e.code) };
    };
    expect(await refused(client('wrong').user.tokens.verify())).toEqual({ status: 403, codes: [10000] });
    expect(await refused(client().accounts.tokens.verify({ account_id: OTHER_ID }))).toEqual({ status: 403, codes: [9109] });
    expect(await refused(client().zones.get({ zone_id: OTHER_ID }))).toEqual({ status: 403, codes: [9109] });
  });

  it('takes faults on the new endpoints like any other', async () => {
    const remove = emu.injectFault({ kind: 'error5xx', endpoint: 'zone.get', status: 503, times: 1 });
    const error = await client().zones.get({ zone_id: emu.zoneId }).catch((e: unknown) => e);
    remove();
    expect((error as InstanceType<typeof Cloudflare.APIError>).status).toBe(503);
  });
});
