import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One embedded PostgreSQL and one private redis-server for the whole run (or
    // TEST_DATABASE_URL / TEST_REDIS_URL): the machine's own servers are never used.
    globalSetup: ['test/global-setup.ts'],
    // Drops the databases and deletes the Redis keys a file leaves behind (see the file).
    setupFiles: ['test/helpers/cleanup-hooks.ts'],
    // Every test file makes its own database and Redis key prefix, so files run in
    // parallel and in any order.
    pool: 'forks',
    fileParallelism: true,
    // Most tests wait on I/O (databases, subprocesses, leases), so more workers than the
    // two cores keeps the suite short.
    maxWorkers: 4,
    // Upper bounds only: the crash tests wait out real leases (about 12 s) in subprocesses.
    testTimeout: 90_000,
    hookTimeout: 60_000,
    sequence: { shuffle: { files: true, tests: false } },
  },
});
