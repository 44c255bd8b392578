import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Every test file makes its own database and Redis key prefix, so files run in
    // parallel and in any order.
    pool: 'forks',
    fileParallelism: true,
    testTimeout: 30_000,
    hookTimeout: 30_000,
    sequence: { shuffle: { files: true, tests: false } },
  },
});
