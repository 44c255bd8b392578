import type { CloudflareConfig } from '../config/env.js';
import type { BudgetGate } from './budget-gate.js';
import { type CloudflareSdk, createCloudflareSdk } from './cloudflare-sdk.js';
import { createNodeHttpFetch } from './node-http-fetch.js';
import { retryAfterMs } from './retry-after.js';

export const DEFAULT_CLOUDFLARE_BASE_URL = 'https://api.cloudflare.com/client/v4';

/**
 * The longest wait before a retry, the SDK's or ours. Cloudflare answers a blocked account
 * with Retry-After: 300; sleeping that long inside a request (the SDK would, uncancellably)
 * helps nobody, so such an answer fails at once, as rate_limited with its Retry-After,
 * and the caller (the client of a create, the reaper for an end) comes back later.
 */
export const MAX_RETRY_DELAY_MS = 10_000;

type Fetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/**
 * Builds the SDK client with every setting explicit: the SDK would otherwise read
 * CLOUDFLARE_* variables from the environment behind the config's back, retry
 * creates, and wait 60 s per attempt.
 *
 * With a `budget`, every HTTP request the SDK makes (each retry and each page included)
 * first passes the shared Cloudflare request budget. Without one the client is
 * unmetered, for tools that talk to Cloudflare outside the broker.
 *
 * The SDK's own retries (checked in cloudflare 7.3, src/client.ts makeRequest /
 * retryRequest / calculateDefaultRetryTimeoutMillis) cover connection errors, timeouts,
 * 408, 409, 429 and 5xx: exponential backoff from 0.5 s up to 8 s with up to 25 % jitter,
 * or exactly the server's retry-after / retry-after-ms when it sends one, and
 * `x-should-retry: false` on a response stops them. The broker relies on them only for
 * calls that are safe to repeat (GET, PUT, DELETE); creates pass maxRetries: 0 and are
 * retried by TunnelProvider, which adopts what an earlier attempt made.
 */
export function createCloudflareClient(config: CloudflareConfig, options: { budget?: BudgetGate; fetch?: Fetch } = {}): CloudflareSdk {
  const base = capRetryAfter(options.fetch ?? createNodeHttpFetch(), MAX_RETRY_DELAY_MS);
  return createCloudflareSdk({
    apiToken: config.apiToken,
    apiKey: null,
    apiEmail: null,
    userServiceKey: null,
    baseURL: config.baseUrl ?? DEFAULT_CLOUDFLARE_BASE_URL,
    timeout: config.timeoutMs,
    maxRetries: config.maxRetries,
    fetch: options.budget ? options.budget.wrapFetch(base) : base,
    // The SDK's own logging can print request details; the broker logs upstream failures itself.
    logLevel: 'off',
  });
}

/** Marks a failed response whose Retry-After exceeds `maxMs` as not to be retried by the SDK. */
function capRetryAfter(fetch: Fetch, maxMs: number): Fetch {
  return async (input, init) => {
    const response = await fetch(input, init);
    if (response.ok) return response;
    const waitMs = retryAfterMs(response.headers);
    if (waitMs === undefined || waitMs <= maxMs) return response;
    const headers = new Headers(response.headers);
    headers.set('x-should-retry', 'false');
    return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
  };
}
