import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInspector, type RunningInspector } from '../../packages/agent/src/inspector/inspector.js';
import { REPO_ROOT } from '../helpers/process.js';

// The inspector's page in a real browser: Debian's chromium (.ci/run installs it when missing),
// headless, offline, driven by playwright-core. `UPDATE_SCREENSHOT=1` also writes the
// screenshot this test takes to docs/inspector.png.
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let app: Server;
const received: Array<{ method: string; url: string; body: string }> = [];
let inspector: RunningInspector;
let userDataDir: string;
let browser: BrowserContext;
let page: Page;

beforeAll(async () => {
  app = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      received.push({ method: req.method ?? '', url: req.url ?? '', body });
      if (req.url?.startsWith('/missing')) return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
      res.writeHead(req.method === 'POST' ? 201 : 200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, got: body ? JSON.parse(body) : null }));
    });
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  inspector = await startInspector({ appPort: (app.address() as { port: number }).port, inspectPort: 0 });
  userDataDir = mkdtempSync(join(tmpdir(), 'inspector-chromium-'));
  browser = await chromium.launchPersistentContext(userDataDir, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 720 } });
  page = browser.pages()[0] ?? (await browser.newPage());
}, 60_000);
afterAll(async () => {
  await browser?.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  await inspector?.close();
  await new Promise<void>((resolve) => {
    app?.close(() => resolve());
    app?.closeAllConnections();
  });
});

/** A visitor's request, through the recording proxy (as cloudflared sends it). */
async function visit(method: string, path: string, body?: unknown): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${inspector.proxyPort}${path}`, {
    method,
    ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
  });
  await res.arrayBuffer();
  return res.status;
}

const row = (path: string) => page.locator('#list tbody tr', { has: page.locator('td.path', { hasText: path }) });

describe('the inspector page in chromium', () => {
  it('shows requests live, their detail and body, replays one as a linked entry the app receives, and filters the list', async () => {
    // Offline: the page loads nothing but from the inspector itself.
    const fetched: string[] = [];
    page.on('request', (request) => fetched.push(request.url()));
    await page.goto(inspector.url);
    await page.locator('#live', { hasText: 'live' }).waitFor();
    const reloads: string[] = [];
    page.on('framenavigated', (frame) => reloads.push(frame.url()));

    // Live: a request through the proxy appears without a reload.
    expect(await visit('POST', '/orders?source=web', { item: 'book', qty: 2 })).toBe(201);
    await row('/orders?source=web').waitFor();
    await expect.poll(() => row('/orders?source=web').locator('td').nth(3).textContent()).toBe('201');
    expect(reloads).toEqual([]);

    // Detail: the request body, pretty-printed JSON.
    await row('/orders?source=web').click();
    await expect.poll(() => page.locator('#request-body').textContent()).toBe('{\n  "item": "book",\n  "qty": 2\n}');
    await expect.poll(() => page.locator('#detail h2').textContent()).toContain('POST /orders?source=web');
    await page.locator('#copy-curl').click();
    await page.locator('#toast', { hasText: 'Copied the curl command' }).waitFor();

    // Replay: a new entry, linked to its original, that the app received.
    const before = received.length;
    await page.locator('#replay').click();
    await page.locator('#list tbody tr', { hasText: 'replay of #' }).first().waitFor();
    await expect.poll(() => received.length).toBe(before + 1);
    expect(received.at(-1)).toEqual({ method: 'POST', url: '/orders?source=web', body: '{"item":"book","qty":2}' });
    await expect.poll(() => page.locator('#detail').textContent()).toMatch(/Replay of #\d+/);

    // Edit and replay: the changed request reaches the app.
    await row('/orders?source=web').last().click();
    await page.locator('#edit').click();
    await page.locator('#edit-method').fill('PUT');
    await page.locator('#edit-body').fill('{"item":"pen","qty":1}');
    await page.locator('#edit-send').click();
    await expect.poll(() => received.at(-1)).toEqual({ method: 'PUT', url: '/orders?source=web', body: '{"item":"pen","qty":1}' });
    await page.locator('#list tbody tr[data-method="PUT"]').waitFor();

    // Filters hide what they should.
    expect(await visit('GET', '/health')).toBe(200);
    expect(await visit('GET', '/missing/page')).toBe(404);
    await row('/missing/page').waitFor();
    const visiblePaths = () => page.locator('#list tbody tr td.path').evaluateAll((cells) => cells.map((c) => c.getAttribute('title')));
    await page.locator('#f-status').selectOption('4');
    await expect.poll(visiblePaths).toEqual(['/missing/page']);
    await page.locator('#f-status').selectOption('');
    await page.locator('#f-method').selectOption('GET');
    await expect.poll(visiblePaths).toEqual(['/missing/page', '/health']);
    await page.locator('#f-method').selectOption('');
    await page.locator('#f-path').fill('orders');
    await expect.poll(async () => (await visiblePaths()).every((p) => p === '/orders?source=web')).toBe(true);
    expect((await visiblePaths()).length).toBe(3);
    await page.locator('#f-path').fill('');
    await expect.poll(async () => (await visiblePaths()).length).toBe(5);

    // The screenshot of the docs: the original request selected.
    await row('/orders?source=web').last().click();
    await expect.poll(() => page.locator('#request-body').textContent()).toContain('"book"');
    await page.locator('#toast').first().waitFor({ state: 'detached' });
    const shot = join(userDataDir, 'inspector.png');
    await page.screenshot({ path: shot });
    if (process.env.UPDATE_SCREENSHOT === '1') copyFileSync(shot, join(REPO_ROOT, 'docs', 'inspector.png'));

    // Clear empties the list, live.
    await page.locator('#clear').click();
    await expect.poll(async () => (await visiblePaths()).length).toBe(0);
    expect(inspector.store.size).toBe(0);
    expect(reloads).toEqual([]);
    expect(fetched.filter((url) => !url.startsWith(`${inspector.url}/`))).toEqual([]);
  });
});
