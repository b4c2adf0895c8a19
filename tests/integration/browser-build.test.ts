import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildBrowser } from '../../scripts/build-browser.js';
import { serveStatic } from '../../examples/browser/static-server.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveChromium = fs.existsSync(CHROMIUM);
if (!haveChromium && process.env.CI === 'true') throw new Error(`${CHROMIUM} missing in CI: .ci/run must install chromium`);
if (!haveChromium) console.log('browser tests skipped: install Debian chromium (apt-get install chromium) to run them');

const ROOT = path.resolve(import.meta.dirname, '../..');
const FIXTURES = path.join(ROOT, 'tests/fixtures/qcow2');
const expected = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'expected.json'), 'utf8')) as Record<string, string>;
let out: string;
let bundle: { bytes: number; gzipBytes: number };

beforeAll(async () => {
  out = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-browser-'));
  bundle = await buildBrowser(out);
}, 60_000);
afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

describe('the browser bundle', () => {
  it('is built from the portable core: no node: module anywhere in it', () => {
    const code = fs
      .readdirSync(out)
      .filter((f) => f.endsWith('.js'))
      .map((f) => fs.readFileSync(path.join(out, f), 'utf8'))
      .join('\n');
    expect(code).not.toMatch(/["']node:[a-z_/]+["']/);
    expect(code).not.toMatch(/\brequire\(["'](fs|path|zlib|net|os|crypto)["']\)/);
    console.log(`browser bundle: ${(bundle.bytes / 1024).toFixed(1)} KiB, ${(bundle.gzipBytes / 1024).toFixed(1)} KiB gzipped`);
  });
});

describe.skipIf(!haveChromium)('the browser bundle in headless Chromium', () => {
  it('reads every qcow2 fixture (zlib, zstd, v2, snapshots) byte-identical to qemu-img, from a memory node and over http (a backing chain too)', async () => {
    const { chromium } = await import('playwright-core');
    const server = await serveStatic({ '/dist/': out, '/fixtures/': FIXTURES, '/page/': path.join(ROOT, 'tests/fixtures/browser') });
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${server.url}/page/qcow2-check.html`);
      await page.waitForFunction(() => (globalThis as unknown as { ready?: boolean }).ready === true, undefined, { timeout: 20_000 });
      for (const name of ['v2.qcow2', 'v3.qcow2', 'zlib.qcow2', 'zstd.qcow2', 'snap.qcow2', 'base.qcow2']) {
        const h = await page.evaluate((u) => (globalThis as unknown as { viaMemory: (u: string) => Promise<string> }).viaMemory(u), `/fixtures/${name}`);
        expect(h, name).toBe(expected[name]);
      }
      // The guest view through drive.readableStream(); the Node-only createReadStream is not there.
      const streamed = await page.evaluate(
        (u) => (globalThis as unknown as { viaStream: (u: string) => Promise<{ hash: string; bytes: number; chunks: number; nodeStream: string }> }).viaStream(u),
        '/fixtures/v3.qcow2',
      );
      expect(streamed).toEqual({ hash: expected['v3.qcow2'], bytes: 65536, chunks: Math.ceil(65536 / 5000), nodeStream: 'undefined' });
      // Over HTTP range requests with the http driver; over.qcow2's backing file name resolves against its URL.
      for (const name of ['zstd.qcow2', 'over.qcow2']) {
        const r = await page.evaluate(
          (u) => (globalThis as unknown as { viaHttp: (u: string) => Promise<{ hash: string; reads: number }> }).viaHttp(u),
          `/fixtures/${name}`,
        );
        expect(r.hash, name).toBe(expected[name]);
        expect(r.reads).toBeGreaterThan(0);
      }
      expect(server.requests.some((r) => r.startsWith('GET /fixtures/base.qcow2 bytes='))).toBe(true);
      // snapshot: true: a writable qcow2 overlay in memory over the read-only http image
      const o = await page.evaluate((u) => (globalThis as unknown as { viaOverlay: (u: string) => Promise<{ same: boolean; top: string }> }).viaOverlay(u), '/fixtures/over.qcow2');
      expect(o).toEqual({ same: true, top: 'qcow2' });
      // throttling on a VirtualClock works in the browser too (the core's timers and settling)
      const v = await page.evaluate(() => (globalThis as unknown as { virtualClockCheck: () => Promise<{ done: number; ms: number }> }).virtualClockCheck());
      expect(v.done).toBe(20);
      // QEMU's bucket: the first request passes at once, then one per 100 ms
      expect(v.ms).toBeGreaterThanOrEqual(1800);
      expect(v.ms).toBeLessThanOrEqual(2000);
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
      await server.close();
    }
  }, 120_000);
});
