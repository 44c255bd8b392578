// scratch (not committed)
import { signAccessToken } from '../src/auth/access-token.js';
import { startCloudflareEmulator } from '../src/cloudflare/emulator/emulator.js';
import { startTestServices } from '../test/helpers/test-services.js';
import { createBenchDatabase, startServerProcess, rssAnonBytes } from './lib/services.js';
const services = await startTestServices({});
const emulator = await startCloudflareEmulator({ zoneName: 'tunnels.bench', maxTunnels: 1000 });
const db = await createBenchDatabase(services.databaseServerUrl, 'probe');
const secret = 'x'.repeat(64);
const nodeArgs = (process.env.PROBE_NODE_ARGS ?? '').split(' ').filter(Boolean);
try {
  for (const rep of [1]) {
    const broker = await startServerProcess({ name: 'b', entry: 'dist/server.js', nodeArgs: ['--import', '/tmp/perfscratch/probe.mjs', ...nodeArgs], env: {
      NODE_ENV: 'production', BROKER_ROLE: 'all', DATABASE_URL: db.url, REDIS_URL: services.redisUrl, REDIS_KEY_PREFIX: `probe${rep}:`, JWT_SECRET: secret,
      CLOUDFLARE_API_TOKEN: emulator.apiToken, CLOUDFLARE_ACCOUNT_ID: emulator.accountId, CLOUDFLARE_ZONE_ID: emulator.zoneId, CLOUDFLARE_BASE_URL: emulator.url,
      TUNNEL_DOMAIN: 'tunnels.bench', LOG_LEVEL: 'info', ...(process.env.PROBE_MALLOC ? { MALLOC_ARENA_MAX: '1' } : {}) }, ready: /tunnel broker ready/ });
    console.log('ready rss', (broker.rss() / 1048576).toFixed(1));
    const r = await fetch(`${broker.baseUrl}/v1/tunnels`, { method: 'POST', headers: { authorization: `Bearer ${signAccessToken(secret, 'u1', 3600)}`, 'content-type': 'application/json' }, body: '{"port":3000}' });
    const j = await r.json() as any;
    console.log('create', r.status);
    await fetch(`${broker.baseUrl}/v1/tunnels/${j.tunnelId}/heartbeat`, { method: 'POST', headers: { authorization: `Bearer ${j.heartbeatToken}` } }).then((x) => console.log('hb', x.status));
    for (const u of ['/healthz', '/readyz', '/metrics']) await fetch(broker.baseUrl + u).then((x) => x.arrayBuffer());
    await new Promise((r) => setTimeout(r, 5000));
    console.log('idle rss', (broker.rss() / 1048576).toFixed(1), 'anon', (rssAnonBytes(broker.pid) / 1048576).toFixed(1));
    broker.child.kill('SIGUSR2');
    await new Promise((r) => setTimeout(r, 500));
    console.log(broker.output().split('\n').filter((l) => l.startsWith('PROBE')).join('\n'));
    await broker.stop();
  }
} finally {
  await emulator.close(); await db.drop(); await services.stop();
}
