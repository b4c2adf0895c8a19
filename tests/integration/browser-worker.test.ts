/**
 * The browser build's blocklayer/worker in headless Chromium: a BlockLayer in a dedicated module
 * worker (reached through a MessagePort), its drives used from the page with the Drive's calls,
 * errors and events.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveStatic } from '../../examples/browser/static-server.js';
import { buildBrowser } from '../../scripts/build-browser.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveChromium = fs.existsSync(CHROMIUM);
if (!haveChromium && process.env.CI === 'true') throw new Error(`${CHROMIUM} missing in CI: .ci/run must install chromium`);

const ROOT = path.resolve(import.meta.dirname, '../..');
const FIXTURES = path.join(ROOT, 'tests/fixtures/qcow2');
const expected = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'expected.json'), 'utf8')) as Record<string, string>;
let out: string;

beforeAll(async () => {
  out = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-browser-worker-'));
  await buildBrowser(out);
}, 60_000);
afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

describe.skipIf(!haveChromium)('a layer in a browser worker, used from the page', () => {
  it('reads http qcow2 images opened in the worker, writes and reads back, and gets BlockErrors and events in the page', async () => {
    const { chromium } = await import('playwright-core');
    const server = await serveStatic({ '/dist/': out, '/fixtures/': FIXTURES, '/page/': path.join(ROOT, 'tests/fixtures/browser') });
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'] });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      // The worker's own uncaught errors reach the page as console errors.
      page.on('console', (m) => {
        if (m.type() === 'error' && !m.text().includes('404')) errors.push(m.text());
      });
      await page.goto(`${server.url}/page/worker-page.html`);
      await page.waitForFunction(() => (globalThis as unknown as { ready?: boolean }).ready === true, undefined, { timeout: 20_000 });
      for (const name of ['zstd.qcow2', 'over.qcow2']) {
        const h = await page.evaluate((u) => (globalThis as unknown as { hashOverHttp: (u: string) => Promise<string> }).hashOverHttp(u), `/fixtures/${name}`);
        expect(h, name).toBe(expected[name]);
      }
      expect(server.requests.some((r) => r.startsWith('GET /fixtures/base.qcow2 bytes='))).toBe(true);
      const r = await page.evaluate(() => (globalThis as unknown as { roundTrip: () => Promise<unknown> }).roundTrip());
      expect(r).toMatchObject({
        same: true,
        failed: { isBlockError: true, code: 'EIO', offset: 65536 },
        range: { code: 'EINVAL', field: 'length' },
        events: [{ op: 'write', offset: 65536, isBlockError: true, code: 'EIO' }],
        closed: 'ECLOSED',
      });
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
      await server.close();
    }
  }, 120_000);
});
