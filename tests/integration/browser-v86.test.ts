import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startExample } from '../../examples/browser/serve.js';
import { expectedSumLine, SEABIOS_DIR } from '../helpers/v86-boot.js';
import { haveProgram } from '../helpers/tools.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ready = fs.existsSync(CHROMIUM) && fs.existsSync(path.join(SEABIOS_DIR, 'bios.bin')) && haveProgram('nasm');
if (!ready && process.env.CI === 'true') throw new Error('chromium, seabios or nasm missing in CI: .ci/run must install them');
if (!ready) console.log('browser v86 example test skipped: needs Debian chromium, seabios and nasm');

/** Where screenshots go: a temp dir, or docs/images with BLOCKLAYER_SCREENSHOTS=docs/images. */
const shots = process.env.BLOCKLAYER_SCREENSHOTS ? path.resolve(process.env.BLOCKLAYER_SCREENSHOTS) : fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-shots-'));

describe.skipIf(!ready)('examples/browser: v86 boots from a qcow2 over http through the browser build, in Chromium', () => {
  it('the guest reads its sectors (right checksum), writes into the in-memory overlay, the page shows the stats, and the iops limit can be changed while it runs', async () => {
    const { chromium } = await import('playwright-core');
    const server = await startExample();
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${server.url}/index.html?iops=200`);
      await page.waitForFunction(() => (globalThis as unknown as { guestDone?: boolean }).guestDone === true, undefined, { timeout: 90_000 });
      const serial = await page.locator('#serial').textContent();
      expect(serial).toContain(expectedSumLine());
      expect(serial).toContain('WRITE OK');
      // the limit, changed from the page while the drive is open
      await page.fill('#iops', '7');
      await page.click('#apply');
      expect(await page.locator('#limit').textContent()).toBe('now 7 IOPS');
      const stats = await page.evaluate(() => (globalThis as unknown as { drive: { stats(): { rdOperations: number; wrOperations: number } } }).drive.stats());
      expect(stats.rdOperations).toBeGreaterThan(30);
      expect(stats.wrOperations).toBeGreaterThanOrEqual(1);
      await page.waitForTimeout(300); // one stats refresh
      fs.mkdirSync(shots, { recursive: true });
      await page.screenshot({ path: path.join(shots, 'browser-v86.png'), fullPage: true });
      expect(errors).toEqual([]);
      // the image on the server is untouched: the guest's write went to the overlay
      expect(server.requests.every((r) => !r.startsWith('PUT') && !r.startsWith('POST'))).toBe(true);
    } finally {
      await browser.close();
      await server.close();
    }
  }, 150_000);
});
