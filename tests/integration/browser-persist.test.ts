// examples/browser/persistent.html in Debian's chromium: v86 boots the boot-count guest
// (tests/fixtures/guest/boot-count.asm) from an http qcow2 base with a qcow2 overlay in OPFS, the
// layer in a Worker. What boot 1 wrote is found by boot 2 in a new browser context on the same
// profile directory; after the page's reset button, boot 3 finds nothing. The server's base is
// never written; a second tab on the same disk is told it is open elsewhere.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { startExample } from '../../examples/browser/serve.js';
import { haveProgram } from '../helpers/tools.js';
import { expectedSumLine, SEABIOS_DIR } from '../helpers/v86-boot.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ready = fs.existsSync(CHROMIUM) && fs.existsSync(path.join(SEABIOS_DIR, 'bios.bin')) && haveProgram('nasm');
if (!ready && process.env.CI === 'true') throw new Error('chromium, seabios or nasm missing in CI: .ci/run must install them');
if (!ready) console.log('browser persistent-disk example test skipped: needs Debian chromium, seabios and nasm');

const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
/** Where screenshots go: a temp dir, or docs/images with BLOCKLAYER_SCREENSHOTS=docs/images. */
const shots = process.env.BLOCKLAYER_SCREENSHOTS ? path.resolve(process.env.BLOCKLAYER_SCREENSHOTS) : fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-shots-'));

type PageGlobals = {
  boots?: number;
  drive: { getLimits(): Promise<{ iopsTotal?: number } | null>; stats(): Promise<{ rdOperations: number; wrOperations: number; flushOperations: number }> };
};

/** Waits until the page's guest finished boot number `n` of this page (its writes flushed); returns what it printed. */
async function booted(page: Page, n: number): Promise<string> {
  await page.waitForFunction((k) => (globalThis as unknown as PageGlobals).boots === k, n, { timeout: 30_000 });
  return (await page.locator('#serial').textContent()) ?? '';
}

describe.skipIf(!ready)('examples/browser/persistent.html: a v86 disk kept in OPFS across browser sessions, in Chromium', () => {
  it('boot 2 in a new context finds the marker boot 1 wrote, after reset boot 3 finds none; a second tab is refused (ELOCKED); the stats panel counts, the slider sets the limit, the http base is never written', async () => {
    const { chromium } = await import('playwright-core');
    const server = await startExample();
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-persist-profile-'));
    /** A persistent context on `profile` with the page loaded; no page or worker error may happen in it. */
    const session = async (use: (page: Page) => Promise<void>) => {
      const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1000, height: 900 } });
      try {
        const page = context.pages()[0] ?? (await context.newPage());
        const errors: string[] = [];
        page.on('pageerror', (e) => errors.push(e.message));
        page.on('console', (m) => {
          if (m.type() === 'error' && !m.text().includes('404')) errors.push(m.text());
        });
        await page.goto(`${server.url}/persistent.html?iops=1000`);
        await use(page);
        expect(errors).toEqual([]);
      } finally {
        await context.close();
      }
    };
    try {
      await session(async (page) => {
        const serial = await booted(page, 1);
        expect(serial).toContain(expectedSumLine()); // the base's data, read through the overlay over http
        expect(serial).toContain('NO MARKER');
        expect(serial).toContain('WROTE 1');
        expect(await page.locator('#state').textContent()).toContain('a new overlay');
        // a second tab on the same disk: the overlay's Web Lock is taken, the page says so
        const other = await page.context().newPage();
        await other.goto(`${server.url}/persistent.html`);
        await expect.poll(() => other.locator('#state').textContent(), { timeout: 15_000 }).toBe('failed: ELOCKED the disk is open in another tab (close it, then reload)');
        await other.close();
      });
      await session(async (page) => {
        const serial = await booted(page, 1);
        expect(serial).toContain('FOUND 1');
        expect(serial).toContain('WROTE 2');
        expect(await page.locator('#state').textContent()).toContain('the overlay an earlier visit left');
        // the stats panel, refreshed from drive.stats() in the worker
        await expect.poll(() => page.locator('#stats tr:nth-child(2) td:last-child').textContent(), { timeout: 5_000 }).toMatch(/^[1-9]/);
        const panel = Object.fromEntries(
          await page.locator('#stats tr').evaluateAll((rows) => rows.map((r) => [r.children[0]?.textContent, Number(r.children[1]?.textContent)])),
        ) as Record<string, number>;
        // the boot sector's read fetched the page's 64 KiB read-ahead chunk: the data area (sectors
        // 1-32) and the marker (sector 64) were answered from it, in the page
        expect(panel.reads).toBe(1);
        expect(panel['bytes read']).toBe(64 * 1024);
        expect(panel.writes).toBeGreaterThanOrEqual(1);
        expect(panel.flushes).toBeGreaterThanOrEqual(1);
        const stats = await page.evaluate(() => (globalThis as unknown as PageGlobals).drive.stats());
        expect(stats.rdOperations).toBeGreaterThanOrEqual(panel.reads);
        // the slider changes the drive's limit in the worker while the guest runs
        await page.fill('#iops', '120');
        await expect.poll(() => page.locator('#limit').textContent(), { timeout: 5_000 }).toBe('120 IOPS');
        expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).drive.getLimits())).toMatchObject({ iopsTotal: 120 });
        fs.mkdirSync(shots, { recursive: true });
        await page.screenshot({ path: path.join(shots, 'browser-v86-persistent.png'), fullPage: true });
        // reset: the drive closed, the overlay deleted, a fresh one laid and booted
        await page.click('#reset');
        const third = await booted(page, 2);
        expect(third).toContain('NO MARKER');
        expect(third).toContain('WROTE 1');
        expect(await page.locator('#state').textContent()).toContain('a new overlay');
      });
      expect(server.requests.some((r) => r.startsWith('GET /images/boot-count.qcow2 bytes='))).toBe(true);
      expect(server.requests.filter((r) => !r.startsWith('GET ') && !r.startsWith('HEAD '))).toEqual([]);
    } finally {
      await server.close();
      fs.rmSync(profile, { recursive: true, force: true });
    }
  }, 120_000);
});
