import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DEFAULT_DEV_DATA_DIR, DEFAULT_RESERVED_SLUGS, loadBootConfig, loadConfig, migrationDatabaseUrl } from '../../src/config/env.js';
import { configProblems } from '../helpers/config-problems.js';

const cloudflare = {
  CLOUDFLARE_API_TOKEN: 't', CLOUDFLARE_ACCOUNT_ID: 'a'.repeat(32), CLOUDFLARE_ZONE_ID: 'z'.repeat(32), TUNNEL_DOMAIN: 'tunnels.example.com',
};

const problems = configProblems;

describe('loadConfig', () => {
  it('has the documented defaults', () => {
    const config = loadBootConfig({});
    expect(config.http.port).toBe(3000);
    expect(config.tunnels).toMatchObject({ heartbeatIntervalSeconds: 20, ttlSeconds: 60, maxPerUser: 5, createRateLimitPerMinute: 20, readRateLimitPerMinute: 120, deleteRateLimitPerMinute: 60 });
    expect(config.reaper.intervalSeconds).toBeLessThanOrEqual(5);
    // No store is assumed: unset, they are the embedded PostgreSQL and private Redis in .data.
    expect(config.databaseUrl).toBeUndefined();
    expect(config.redis.url).toBeUndefined();
    expect(config.devServices.dataDir).toBe(DEFAULT_DEV_DATA_DIR);
    expect(DEFAULT_DEV_DATA_DIR).toBe(path.resolve(fileURLToPath(new URL('../../.data', import.meta.url))));
    expect(config.cloudflare.timeoutMs).toBe(10_000);
  });

  it('resolves DEV_DATA_DIR against the working directory', () => {
    expect(loadBootConfig({ DEV_DATA_DIR: 'somewhere/data' }).devServices.dataDir).toBe(path.resolve('somewhere/data'));
  });

  it('gives code that is handed its stores (tools, tests) a config only with both DATABASE_URL and REDIS_URL', () => {
    expect(() => loadConfig({ REDIS_URL: 'redis://127.0.0.1:1' })).toThrow(/DATABASE_URL: required here/);
    expect(() => loadConfig({ DATABASE_URL: 'postgresql://127.0.0.1:1/x' })).toThrow(/REDIS_URL: required here/);
    expect(loadConfig({ DATABASE_URL: 'postgresql://127.0.0.1:1/x', REDIS_URL: 'redis://127.0.0.1:1' })).toMatchObject({
      databaseUrl: 'postgresql://127.0.0.1:1/x',
      redis: { url: 'redis://127.0.0.1:1' },
    });
  });

  it('runs migrations on DIRECT_DATABASE_URL when set (a transaction-mode pooler cannot keep their session lock), else on DATABASE_URL', () => {
    const stores = { DATABASE_URL: 'postgresql://pgbouncer.internal:6432/broker', REDIS_URL: 'redis://127.0.0.1:1' };
    expect(migrationDatabaseUrl(loadConfig(stores))).toBe(stores.DATABASE_URL);
    expect(migrationDatabaseUrl(loadConfig({ ...stores, DIRECT_DATABASE_URL: 'postgresql://db.internal:5432/broker' }))).toBe('postgresql://db.internal:5432/broker');
    expect(problems({ DIRECT_DATABASE_URL: 'postgresql://db.internal:5432/broker' }).join('\n')).toMatch(/DIRECT_DATABASE_URL: set DATABASE_URL as well/);
  });

  it('reads Sentinel settings: the sentinels, the primary\'s name and an optional password, and needs both of the first two', () => {
    const config = loadConfig({ DATABASE_URL: 'postgresql://127.0.0.1:1/x', REDIS_SENTINELS: 's1.internal:26379,10.0.0.2:26380', REDIS_SENTINEL_NAME: 'broker', REDIS_SENTINEL_PASSWORD: 'hunter2' });
    expect(config.redis).toMatchObject({
      url: 'redis://', // no REDIS_URL: no credentials, plain TCP
      sentinel: { nodes: [{ host: 's1.internal', port: 26379 }, { host: '10.0.0.2', port: 26380 }], name: 'broker', password: 'hunter2' },
    });
    expect(loadBootConfig({}).redis.sentinel).toBeUndefined();
    expect(problems({ REDIS_SENTINELS: 's1:26379' }).join('\n')).toMatch(/REDIS_SENTINELS, REDIS_SENTINEL_NAME: set both/);
    expect(problems({ REDIS_SENTINELS: 's1' }).join('\n')).toMatch(/REDIS_SENTINELS/);
    expect(problems({ REDIS_SENTINEL_PASSWORD: 'x' }).join('\n')).toMatch(/REDIS_SENTINEL_PASSWORD: set REDIS_SENTINELS as well/);
    // Production takes sentinels instead of REDIS_URL, and never echoes the sentinel password.
    const found = problems({ NODE_ENV: 'production', REDIS_SENTINELS: 's1:26379', REDIS_SENTINEL_NAME: 'broker', REDIS_SENTINEL_PASSWORD: 'hunter2-secret' }).join('\n');
    expect(found).not.toMatch(/REDIS_URL/);
    expect(found).not.toContain('hunter2-secret');
  });

  it('reads Redis Cluster seed nodes, with credentials and TLS from a URL form, ignores REDIS_URL then, and refuses sentinels with it', () => {
    const db = { DATABASE_URL: 'postgresql://127.0.0.1:1/x' };
    expect(loadConfig({ ...db, REDIS_CLUSTER_NODES: '10.0.0.1:7000,redis-b.internal:7001' }).redis.cluster).toEqual({
      nodes: [{ host: '10.0.0.1', port: 7000 }, { host: 'redis-b.internal', port: 7001 }], tls: false, username: undefined, password: undefined,
    });
    const secure = loadConfig({ ...db, REDIS_URL: 'redis://ignored:1', REDIS_CLUSTER_NODES: 'rediss://broker:s3cret@10.0.0.1:7000,rediss://10.0.0.2:7000' });
    expect(secure.redis.cluster).toMatchObject({ tls: true, username: 'broker', password: 's3cret' });
    expect(secure.redis.url).not.toContain('s3cret');
    expect(secure.warnings.join('\n')).toMatch(/REDIS_URL is ignored: REDIS_CLUSTER_NODES is set/);
    // Production accepts a cluster instead of REDIS_URL.
    expect(problems({ NODE_ENV: 'production', REDIS_CLUSTER_NODES: '10.0.0.1:7000' }).join('\n')).not.toMatch(/REDIS_URL/);
    expect(problems({ REDIS_CLUSTER_NODES: '10.0.0.1' }).join('\n')).toMatch(/REDIS_CLUSTER_NODES: each node is host:port/);
    expect(problems({ REDIS_CLUSTER_NODES: 'redis://10.0.0.1:7000,rediss://10.0.0.2:7000' }).join('\n')).toMatch(/one scheme for every node/);
    expect(problems({ REDIS_CLUSTER_NODES: '10.0.0.1:7000', REDIS_SENTINELS: 's1:26379', REDIS_SENTINEL_NAME: 'b' }).join('\n')).toMatch(/REDIS_CLUSTER_NODES, REDIS_SENTINELS: set one or the other/);
    // A brace in the prefix would be a hash tag putting every key in one slot.
    expect(problems({ REDIS_KEY_PREFIX: 'tb{x}:' }).join('\n')).toMatch(/REDIS_KEY_PREFIX: must not contain/);
    const leaked = problems({ REDIS_CLUSTER_NODES: 'redis://u:hunter2-secret@bad host:1' }).join('\n');
    expect(leaked).toMatch(/REDIS_CLUSTER_NODES/);
    expect(leaked).not.toContain('hunter2-secret');
  });

  it('bounds the PostgreSQL pool: size, connect timeout and statement timeout, with 0 sending no statement timeout', () => {
    expect(loadBootConfig({}).databasePool).toEqual({ max: 10, connectTimeoutMs: 5_000, statementTimeoutMs: 15_000 });
    expect(loadBootConfig({ DATABASE_POOL_MAX: '4', DATABASE_CONNECT_TIMEOUT_MS: '800', DATABASE_STATEMENT_TIMEOUT_MS: '0' }).databasePool).toEqual({ max: 4, connectTimeoutMs: 800, statementTimeoutMs: 0 });
    expect(problems({ DATABASE_POOL_MAX: '0' }).join('\n')).toMatch(/DATABASE_POOL_MAX/);
  });

  it('runs on the built-in emulator with a development secret when nothing is set outside production', () => {
    const config = loadBootConfig({});
    expect(config.cloudflare.mode).toBe('emulator');
    expect(config.jwt.isDevelopmentSecret).toBe(true);
  });

  it('names every bad variable at once', () => {
    const found = problems({ PORT: 'eighty', CLOUDFLARE_TIMEOUT_MS: '-5', LOG_LEVEL: 'loud' });
    expect(found.join('\n')).toMatch(/PORT/);
    expect(found.join('\n')).toMatch(/CLOUDFLARE_TIMEOUT_MS/);
    expect(found.join('\n')).toMatch(/LOG_LEVEL/);
  });

  it('makes a missing store, secret or Cloudflare setting fatal in production (no embedded PostgreSQL or private Redis there)', () => {
    const found = problems({ NODE_ENV: 'production' }).join('\n');
    for (const name of ['DATABASE_URL', 'REDIS_URL', 'JWT_SECRET', 'CLOUDFLARE_API_TOKEN', 'CLOUDFLARE_ACCOUNT_ID', 'CLOUDFLARE_ZONE_ID', 'TUNNEL_DOMAIN']) expect(found).toContain(name);
    const stores = { DATABASE_URL: 'postgresql://db.internal/broker', REDIS_URL: 'rediss://cache.internal' };
    expect(loadConfig({ NODE_ENV: 'production', JWT_SECRET: 's'.repeat(32), ...stores, ...cloudflare }).cloudflare.mode).toBe('remote');
  });

  it('refuses a partial Cloudflare configuration instead of silently using the emulator', () => {
    expect(problems({ CLOUDFLARE_API_TOKEN: 'x' }).join('\n')).toMatch(/CLOUDFLARE_ACCOUNT_ID/);
  });

  it('never echoes a secret in its error', () => {
    const text = problems({ JWT_SECRET: 'short-secret', METRICS_TOKEN: 'short-token' }).join('\n');
    expect(text).toContain('JWT_SECRET');
    expect(text).toContain('METRICS_TOKEN');
    expect(text).not.toContain('short-secret');
    expect(text).not.toContain('short-token');
  });

  it('never echoes a password in a connection string, while naming the variable', () => {
    const cases: Array<[string, string]> = [
      ['DATABASE_URL', 'mysql://u:hunter2@h/db'],
      ['DATABASE_URL', 'mysql://u@h/db?password=hunter2'],
      ['REDIS_URL', 'reddis://:hunter2@127.0.0.1:6379'],
      ['REDIS_URL', 'redis:/:hunter2@127.0.0.1:6379'],
      ['REDIS_URL', 'redis//default:hunter2@127.0.0.1'],
      ['JWT_JWKS_URL', 'http://idp:hunter2@idp.example.test/jwks.json'],
    ];
    for (const [name, value] of cases) {
      const text = problems({ [name]: value }).join('\n');
      expect(text, value).toMatch(new RegExp(`^${name}: `));
      expect(text, value).not.toContain('hunter2');
    }
    // What can be shown still is, to say what is wrong.
    expect(problems({ DATABASE_URL: 'mysql://u:hunter2@h/db' }).join('\n')).toContain('mysql://u:***@h/db');
  });

  it('refuses a TTL that is not longer than the heartbeat interval', () => {
    expect(problems({ TUNNEL_TTL_SECONDS: '20', HEARTBEAT_INTERVAL_SECONDS: '20' }).join('\n')).toMatch(/TUNNEL_TTL_SECONDS/);
  });

  it('takes a configurable reserved list, lower-cased', () => {
    expect([...loadBootConfig({ RESERVED_SLUGS: 'Foo, bar' }).tunnels.reservedSlugs]).toEqual(['foo', 'bar']);
    expect(loadBootConfig({}).tunnels.reservedSlugs.size).toBe(DEFAULT_RESERVED_SLUGS.length);
  });
});
