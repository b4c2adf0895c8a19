// The opfs node in async mode (the page's main thread: no sync access handle) reopens between
// read-only and read-write as the worker-side node does: the commit job merges an overlay into
// its opfs base found by name (opened read-only, reopened read-write, its waiting writes
// committed when it goes back), a reopen that cannot take the exclusive Web Lock fails with
// ELOCKED and leaves the node serving in its old mode, and qemu-img reads the committed base.
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
const ready = fs.existsSync(CHROMIUM) && haveProgram('qemu-img');
if (!ready && process.env.CI === 'true') throw new Error('chromium or qemu-img missing in CI');
if (!ready) console.log('browser opfs page reopen tests skipped: need Debian chromium and qemu-img');

const ROOT = path.resolve(import.meta.dirname, '../..');
const MiB = 1 << 20;
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** The pattern of opfs-crash-ops.js (same formula). */
const pattern = (length: number, seed: number) => new Uint8Array(length).map((_, i) => (i * 31 + seed * 7 + (i >> 9)) & 0xff);
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** The browser bundle's exports this test uses on the page. */
type Blocklayer = typeof import('../../src/browser.js');

let tmp: string;
let server: Awaited<ReturnType<typeof serveStatic>>;
let context: BrowserContext | undefined;
let page: Page;
const errors: string[] = [];

/** An op of opfs-crash-ops.js run on the page's main thread. */
const inPage = <T>(op: string, args: Record<string, unknown> = {}) =>
  page.evaluate(([o, a]) => (globalThis as unknown as { inPage: (op: string, args: unknown) => Promise<unknown> }).inPage(o, a), [op, args] as const) as Promise<T>;

beforeAll(async () => {
  if (!ready) return;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-opfs-page-reopen-'));
  await buildBrowser(path.join(tmp, 'dist'));
  server = await serveStatic({ '/dist/': path.join(tmp, 'dist'), '/page/': path.join(ROOT, 'tests/fixtures/browser') });
  const { chromium } = await import('playwright-core');
  context = await chromium.launchPersistentContext(path.join(tmp, 'profile'), { executablePath: CHROMIUM, headless: true, args: ARGS });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${server.url}/page/opfs-crash-page.html`);
  await page.waitForFunction(() => (globalThis as unknown as { ready?: boolean }).ready === true, undefined, { timeout: 20_000 });
  // the bundle on the page as `bl` (an import() inside evaluate would be rewritten by vitest)
  await page.addScriptTag({ type: 'module', content: "globalThis.bl = await import('/dist/blocklayer.js');" });
  await page.waitForFunction(() => (globalThis as unknown as { bl?: unknown }).bl !== undefined, undefined, { timeout: 20_000 });
}, 90_000);
afterAll(async () => {
  await context?.close();
  await server?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe.skipIf(!ready)('the opfs node reopened on the page (async mode)', () => {
  const size = 8 * MiB;
  const baseWrites = [
    [0, 256 * 1024, 21],
    [5 * MiB, MiB, 22],
  ];
  const writes = [
    [64 * 1024, 300_000, 23],
    [5 * MiB + 512, 90_000, 24],
    [size - 4096, 4096, 25],
  ];
  const guest = new Uint8Array(size);
  for (const [offset, length, seed] of [...baseWrites, ...writes]) guest.set(pattern(length, seed), offset);
  const guestHash = sha256(guest);

  it('an overlay and its base made on the page run in async mode', async () => {
    const chain = await inPage('opfsChain', { base: 'page/base.qcow2', overlay: 'page/over.qcow2', backingName: 'base.qcow2', size, baseWrites, writes });
    expect(chain).toEqual({ hash: guestHash, backing: 'page/base.qcow2' });
    const mode = await page.evaluate(async () => {
      const bl = (globalThis as unknown as { bl: Blocklayer }).bl;
      const layer = new bl.BlockLayer();
      try {
        // the caller owns a node from openNode: unref it, or its Web Lock outlives the layer
        const n = await layer.openNode({ driver: 'opfs', path: 'page/base.qcow2', readOnly: true });
        const mode = n.info().mode;
        await n.unref();
        return mode;
      } finally {
        await layer.close();
      }
    });
    expect(mode).toBe('async');
    expect(errors).toEqual([]);
  }, 60_000);

  it('a reopen read-write that cannot take the exclusive Web Lock is ELOCKED; the node serves on read-only and reopens once the lock is free', async () => {
    const r = await page.evaluate(async () => {
      const bl = (globalThis as unknown as { bl: Blocklayer }).bl;
      const holder = new bl.BlockLayer();
      const layer = new bl.BlockLayer();
      const failure = (e: { code?: string; message?: string }) => ({ code: e?.code ?? 'none', message: String(e?.message ?? e) });
      try {
        const other = await holder.openNode({ driver: 'opfs', path: 'page/base.qcow2', readOnly: true });
        const n = await layer.openNode({ driver: 'opfs', path: 'page/base.qcow2', readOnly: true });
        const head = async () => {
          const b = new Uint8Array(4);
          await n.read(0, b);
          return [...b];
        };
        const before = await head();
        let error: unknown = null;
        await n.reopen(false).catch((e: { code?: string; message?: string }) => {
          error = failure(e);
        });
        const afterFail = { readOnly: n.readOnly, head: await head() };
        // the old instance holds a shared lock again: a second reader may still open, a writer may not
        const writer = await holder.openNode({ driver: 'opfs', path: 'page/base.qcow2' }).then(
          (w: { unref(): Promise<void> }) => w.unref().then(() => null),
          (e: { code?: string; message?: string }) => failure(e),
        );
        await other.unref();
        await n.reopen(false);
        const rw = { readOnly: n.readOnly, head: await head() };
        const reader = await holder.openNode({ driver: 'opfs', path: 'page/base.qcow2', readOnly: true }).then(
          (w: { unref(): Promise<void> }) => w.unref().then(() => null),
          (e: { code?: string; message?: string }) => failure(e),
        );
        await n.reopen(true);
        const back = { readOnly: n.readOnly, head: await head() };
        await n.unref();
        return { before, error, afterFail, writer, rw, reader, back };
      } finally {
        await layer.close();
        await holder.close();
      }
    });
    const qfi = [0x51, 0x46, 0x49, 0xfb];
    expect(r.before).toEqual(qfi);
    expect(r.error).toMatchObject({ code: 'ELOCKED' });
    expect(r.afterFail).toEqual({ readOnly: true, head: qfi });
    expect(r.writer).toMatchObject({ code: 'ELOCKED' });
    expect(r.rw).toEqual({ readOnly: false, head: qfi });
    // read-write holds the exclusive lock: a reader elsewhere is refused, as with flock
    expect(r.reader).toMatchObject({ code: 'ELOCKED' });
    expect(r.back).toEqual({ readOnly: true, head: qfi });
    expect(errors).toEqual([]);
  }, 60_000);

  it('the commit job merges the overlay into its base found by name (read-only, reopened read-write on the page); the base alone reads as the chain did; qemu-img agrees', async () => {
    const r = await inPage('commitChain', { overlay: 'page/over.qcow2', base: 'page/base.qcow2', byName: true });
    expect(r).toMatchObject({ before: guestHash, after: guestHash, baseBacking: null, pivoted: true, baseReadOnly: true });
    const b64 = await page.evaluate(() => (globalThis as unknown as { inWorker: (op: string, a: unknown) => Promise<string> }).inWorker('fileBase64', { path: 'page/base.qcow2' }));
    const file = path.join(tmp, 'committed-base.qcow2');
    fs.writeFileSync(file, Buffer.from(b64, 'base64'));
    execFileSync('qemu-img', ['check', file]); // exit 0: no errors, no leaks
    const raw = `${file}.raw`;
    execFileSync('qemu-img', ['convert', '-O', 'raw', file, raw]);
    expect(sha256(fs.readFileSync(raw))).toBe(guestHash);
    expect(errors).toEqual([]);
  }, 60_000);
});
