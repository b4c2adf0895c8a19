// The opfs driver in Debian's chromium: data that outlives the browser context (a new persistent
// context on the same profile directory reads it back), qcow2 overlays over an http base checked
// by qemu-img, Web Locks between workers and pages, quota exhaustion as ENOSPC under werror=stop,
// and an 8 GiB sparse qcow2 written near its end.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveStatic } from '../../examples/browser/static-server.js';
import { buildBrowser } from '../../scripts/build-browser.js';
import { haveProgram } from '../helpers/tools.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ready = fs.existsSync(CHROMIUM) && haveProgram('qemu-img') && haveProgram('qemu-io');
if (!ready && process.env.CI === 'true') throw new Error('chromium, qemu-img or qemu-io missing in CI');
if (!ready) console.log('browser opfs tests skipped: need Debian chromium, qemu-img and qemu-io');

const ROOT = path.resolve(import.meta.dirname, '../..');
const MiB = 1 << 20;
const GiB = 2 ** 30;
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** The pattern opfs-ops.js writes (same formula). */
const pattern = (length: number, seed: number) => new Uint8Array(length).map((_, i) => (i * 31 + seed * 7 + (i >> 9)) & 0xff);
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** The guest view of an image, as qemu-img converts it to raw. */
function rawView(image: string): Buffer {
  const out = `${image}.raw`;
  execFileSync('qemu-img', ['convert', '-O', 'raw', image, out]);
  const bytes = fs.readFileSync(out);
  fs.rmSync(out);
  return bytes;
}

type Call = (op: string, args?: Record<string, unknown>, which?: number) => Promise<unknown>;
interface Session {
  page: Page;
  context: BrowserContext;
  worker: <T>(op: string, args?: Record<string, unknown>, which?: number) => Promise<T>;
  main: <T>(op: string, args?: Record<string, unknown>) => Promise<T>;
}

let tmp: string;
let server: Awaited<ReturnType<typeof serveStatic>>;
let baseBytes: Buffer;

beforeAll(async () => {
  if (!ready) return;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-opfs-'));
  await buildBrowser(path.join(tmp, 'dist'));
  // the http base: 16 MiB of qcow2 with data qemu-io put in it
  fs.mkdirSync(path.join(tmp, 'img'));
  const base = path.join(tmp, 'img/base.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '16M']);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0xa5 9M 2M', '-c', 'write -P 0x33 15M 512k', base]);
  baseBytes = rawView(base);
  server = await serveStatic({ '/dist/': path.join(tmp, 'dist'), '/page/': path.join(ROOT, 'tests/fixtures/browser'), '/img/': path.join(tmp, 'img') });
}, 60_000);
afterAll(async () => {
  await server?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** A persistent context on `profile` (a Chromium user-data dir) with the opfs page loaded; `close()` ends it. */
async function openSession(profile: string): Promise<Session & { errors: string[]; close: () => Promise<void> }> {
  const { chromium } = await import('playwright-core');
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${server.url}/page/opfs-page.html`);
    await page.waitForFunction(() => (globalThis as unknown as { ready?: boolean }).ready === true, undefined, { timeout: 20_000 });
    const worker = <T>(op: string, args: Record<string, unknown> = {}, which = 0) =>
      page.evaluate(([o, a, w]) => (globalThis as unknown as { inWorker: Call }).inWorker(o as string, a as Record<string, unknown>, w as number), [op, args, which] as const) as Promise<T>;
    const main = <T>(op: string, args: Record<string, unknown> = {}) =>
      page.evaluate(([o, a]) => (globalThis as unknown as { inPage: Call }).inPage(o as string, a as Record<string, unknown>), [op, args] as const) as Promise<T>;
    return { page, context, worker, main, errors, close: () => context.close() };
  } catch (e) {
    await context.close();
    throw e;
  }
}

/** Runs `use` in a session of its own, which ends with it; no page error may have happened. */
async function session(profile: string, use: (s: Session) => Promise<void>): Promise<void> {
  const s = await openSession(profile);
  try {
    await use(s);
    expect(s.errors).toEqual([]);
  } finally {
    await s.close();
  }
}

describe.skipIf(!ready)('the opfs driver in Chromium', () => {
  it('what a worker (sync access handle) and the page (async API) write — raw files, qcow2 overlays over an http base — is there in a new browser context on the same profile; qemu-img checks the overlay and reads the same guest view', async () => {
    // one profile, two contexts: launching Chromium is the slow part here
    const profile = fs.mkdtempSync(path.join(tmp, 'profile-'));
    const size = 4 * MiB;
    const rawWrites: [number, number, number][] = [
      [0, 65536, 1],
      [3 * MiB + 123, 100_000, 2],
      [size - 4096, 4096, 3],
    ];
    const want = new Uint8Array(size);
    for (const [offset, length, seed] of rawWrites) want.set(pattern(length, seed), offset);
    const rawHash = sha256(want);
    const backing = `${server.url}/img/base.qcow2`;
    const writes: [number, number, number][] = [
      [512 * 1024, 1 * MiB, 4], // over the base's data and past it
      [9 * MiB + 70_000, 300_000, 6],
      [16 * MiB - 65536, 65536, 7],
    ];
    const guest = new Uint8Array(baseBytes);
    for (const [offset, length, seed] of writes) guest.set(pattern(length, seed), offset);
    const guestHash = sha256(guest);
    await session(profile, async ({ worker, main }) => {
      expect(await worker('writeRaw', { path: 'vms/a/disk.raw', size, writes: rawWrites })).toMatchObject({ hash: rawHash, mode: 'sync' });
      expect(await main('writeRaw', { path: 'vms/b/page.raw', size, writes: rawWrites })).toMatchObject({ hash: rawHash, mode: 'async' });
      const w = await worker<{ hash: string; backingNode: string; created: { virtualSize: number } }>('createOverlay', { path: 'vms/o/over.qcow2', backing, writes });
      expect(w).toMatchObject({ hash: guestHash, backingNode: 'qcow2', created: { virtualSize: 16 * MiB } });
      // the same through the async API on the main thread (its truncate and commits)
      expect(await main('createOverlay', { path: 'vms/o/page.qcow2', backing, writes })).toMatchObject({ hash: guestHash });
    });
    let image = '';
    await session(profile, async ({ worker, main }) => {
      expect(await worker('hashRaw', { path: 'vms/a/disk.raw' })).toEqual({ hash: rawHash, length: size });
      expect(await worker('hashRaw', { path: 'vms/b/page.raw' })).toEqual({ hash: rawHash, length: size });
      expect(await main('hashRaw', { path: 'vms/a/disk.raw' })).toEqual({ hash: rawHash, length: size });
      // a path that was never made
      await expect(worker('hashRaw', { path: 'vms/none/disk.raw' })).rejects.toThrow(/could not open folder 'vms\/none'/);
      // the backing found by the URL stored in the header
      expect(await worker('hashQcow2', { path: 'vms/o/over.qcow2' })).toEqual({ hash: guestHash, backing: 'http' });
      expect(await main('hashQcow2', { path: 'vms/o/page.qcow2' })).toEqual({ hash: guestHash, backing: 'http' });
      image = await worker<string>('fileBase64', { path: 'vms/o/over.qcow2' });
    });
    const file = path.join(tmp, 'over-from-opfs.qcow2');
    fs.writeFileSync(file, Buffer.from(image, 'base64'));
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' }));
    expect(info['backing-filename']).toBe(backing);
    expect(info['backing-filename-format']).toBe('qcow2');
    // (the qemu-img here has no curl: the same base, as a local file)
    execFileSync('qemu-img', ['rebase', '-u', '-F', 'qcow2', '-b', path.join(tmp, 'img/base.qcow2'), file]);
    execFileSync('qemu-img', ['check', file]); // exit 0: no errors, no leaks
    expect(sha256(rawView(file))).toBe(guestHash);
  }, 90_000);
});

describe.skipIf(!ready)('the opfs driver in one Chromium context', () => {
  let s: Awaited<ReturnType<typeof openSession>>;
  beforeAll(async () => {
    s = await openSession(fs.mkdtempSync(path.join(tmp, 'profile-')));
  }, 60_000);
  afterAll(async () => {
    await s?.close();
  });

  it("Web Locks give flock's rule: one writer or many readers, across workers, the page and another tab; ELOCKED otherwise, released at close", async () => {
    const { worker, main } = s;
    const path = 'vms/l/disk.raw';
    const first = await worker<{ id: number }>('hold', { path, create: true, size: MiB }, 0);
    expect(first.id).toBeGreaterThan(0);
    expect(await worker('hold', { path }, 1)).toMatchObject({ error: { code: 'ELOCKED' } });
    expect(await main('hold', { path })).toMatchObject({ error: { code: 'ELOCKED' } });
    expect(await worker('hold', { path, readOnly: true }, 1)).toMatchObject({ error: { code: 'ELOCKED' } });
    // another tab of the origin
    const tab = await s.context.newPage();
    await tab.goto(`${server.url}/page/opfs-page.html`);
    await tab.waitForFunction(() => (globalThis as unknown as { ready?: boolean }).ready === true, undefined, { timeout: 20_000 });
    expect(await tab.evaluate((p) => (globalThis as unknown as { inPage: Call }).inPage('hold', { path: p }), path)).toMatchObject({ error: { code: 'ELOCKED' } });
    await tab.close();
    await worker('release', { id: first.id }, 0);
    // readers share, in a worker and on the page; a writer is refused while they read
    const r1 = await worker<{ id: number }>('hold', { path, readOnly: true }, 1);
    const r2 = await main<{ id: number }>('hold', { path, readOnly: true });
    const r3 = await worker<{ id: number }>('hold', { path, readOnly: true }, 0);
    expect([r1.id, r2.id, r3.id].every((id) => id > 0)).toBe(true);
    expect(await worker('hold', { path }, 0)).toMatchObject({ error: { code: 'ELOCKED' } });
    await worker('release', { id: r1.id }, 1);
    await main('release', { id: r2.id });
    await worker('release', { id: r3.id }, 0);
    const again = await worker<{ id: number }>('hold', { path }, 1);
    expect(again.id).toBeGreaterThan(0);
    await worker('release', { id: again.id }, 1);
    expect(s.errors).toEqual([]);
  }, 60_000);

  it('growth past the quota (CDP Storage.overrideQuotaForOrigin) is ENOSPC; under werror=stop a qcow2 drive on opfs waits, and resume() after more quota loses nothing', async () => {
    const { page, context, worker } = s;
    const cdp = await context.newCDPSession(page);
    const origin = server.url;
    await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 4 * MiB });
    expect(await worker('quota.reportOnce', { path: 'q/report.raw', length: 8 * MiB })).toMatchObject({ error: { code: 'ENOSPC' } });
    const chunk = MiB;
    const count = 8;
    const started = await worker<{ error: { code: string } | null; ioStatus: string }>('quota.start', { path: 'q/stop.qcow2', chunk, count });
    expect(started).toMatchObject({ error: { code: 'ENOSPC' }, failed: null, ioStatus: 'nospace' });
    await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 256 * MiB });
    expect(await worker('quota.resume', { chunk, count })).toEqual({ same: true, ioStatus: 'ok' });
    await cdp.send('Storage.overrideQuotaForOrigin', { origin });
    expect(s.errors).toEqual([]);
  }, 60_000);

  it('write-zeroes reads back as zeros and keeps the length, in the middle and to the end of the file, in both modes', async () => {
    const size = MiB;
    const zeroes = [
      [4096, 8192],
      [size - 300_000, 300_000],
    ];
    const want = pattern(size, 8);
    for (const [offset, length] of zeroes) want.fill(0, offset, offset + length);
    const expected = { hash: sha256(want), length: size };
    expect(await s.worker('zeroes', { path: 'z/sync.raw', size, zeroes })).toEqual(expected);
    expect(await s.main('zeroes', { path: 'z/async.raw', size, zeroes })).toEqual(expected);
    expect(s.errors).toEqual([]);
  }, 60_000);

  it('an 8 GiB sparse qcow2 on opfs: a write at 7.9 GiB reads back through a fresh open, and the file stays small', async () => {
    const { worker } = s;
    const offset = Math.floor((7.9 * GiB) / 4096) * 4096 + 512;
    const r = await worker<{ same: boolean; virtualSize: number; fileLength: number }>('bigQcow2', { path: 'big/disk.qcow2', size: 8 * GiB, offset, length: 200_000 });
    expect(r.same).toBe(true);
    expect(r.virtualSize).toBe(8 * GiB);
    expect(r.fileLength).toBeLessThan(4 * MiB);
    expect(s.errors).toEqual([]);
  }, 60_000);
});
