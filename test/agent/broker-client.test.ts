import { describe, expect, it } from 'vitest';
import { DELETE_TIMEOUT_MS } from '../../packages/agent/src/broker-client.js';
import { MAX_BUDGET_WAIT_MS } from '../../src/cloudflare/budget-gate.js';
import { loadBootConfig } from '../../src/config/env.js';

describe('the agent client timeouts', () => {
  it("give a DELETE time for the broker's longest Cloudflare budget wait and a teardown request after it", () => {
    // The agent cannot import server modules, so it repeats the numbers; this keeps them in step.
    const cloudflareTimeoutMs = loadBootConfig({ NODE_ENV: 'test' }).cloudflare.timeoutMs;
    expect(DELETE_TIMEOUT_MS).toBeGreaterThanOrEqual(MAX_BUDGET_WAIT_MS + cloudflareTimeoutMs);
  });
});
