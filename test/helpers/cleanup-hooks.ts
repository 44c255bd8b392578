/**
 * Loaded before every test file (vitest setupFiles). Its afterAll is registered first, so it
 * runs last, after the file's own hooks: it kills the processes the file left running, shuts
 * its private servers, drops its databases and deletes its Redis keys, in that order (a
 * process still running could re-create either), and fails the file if keys keep coming.
 */
import { afterAll } from 'vitest';
import { dropTestDatabases } from './database.js';
import { stopLeftoverProcesses } from './process.js';
import { cleanUpTestKeyPrefixes } from './redis-keys.js';
import { removeTempDirs } from './temp-dir.js';

afterAll(async () => {
  try {
    await stopLeftoverProcesses();
    removeTempDirs();
    await dropTestDatabases();
  } finally {
    await cleanUpTestKeyPrefixes();
  }
});
