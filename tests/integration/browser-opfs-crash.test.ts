// The opfs driver in Debian's chromium, past its first writes: a worker terminated and a whole
// browser context closed in the middle of a burst of qcow2 writes (the next open gets the Web
// Lock, check repairs, every flushed write reads back, qemu-img check passes), the storage facts
// in info() (estimate, persist requested once by a writer), and a qcow2 overlay whose backing is
// named by an OPFS path, reopened in a new context and committed into its OPFS base.
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
if (!ready) console.log('browser opfs crash tests skipped: need Debian chromium and qemu-img');

const ROOT = path.resolve(import.meta.dirname, '../..');
const MiB = 1 << 20;
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** The pattern and the burst's offsets of opfs-crash-ops.js (same formulas). */
const pattern = (length: number, seed: number) => new Uint8Array(length).map((_, i) => (i * 31 + seed * 7 + (i >> 9)) & 0xff);
const burstOffset = (i: number, stride: number) => i * stride + (i % 7) * 512;
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** The burst: 4 KiB writes, each into a new 4 KiB cluster 64 KiB after the last, a flush every 10. */
const BURST = { size: 3000 * 65536, stride: 65536, length: 4096, flushEvery: 10 };
const KILL_AT = 150;

interface Session {
  page: Page;
  context: BrowserContext;
  errors: string[];
  worker: <T>(op: string, args?: Record<string, unknown>) => Promise<T>;
}

let tmp: string;
let profile: string;
let server: Awaited<ReturnType<typeof serveStatic>>;
let s: Session | undefined;

beforeAll(async () => {
  if (!ready) return;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-opfs-crash-'));
  profile = path.join(tmp, 'profile');
  await buildBrowser(path.join(tmp, 'dist'));
  server = await serveStatic({ '/dist/': path.join(tmp, 'dist'), '/page/': path.join(ROOT, 'tests/fixtures/browser') });
  s = await openSession();
}, 90_000);
afterAll(async () => {
  await s?.context.close();
  await server?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** A persistent context on the profile with the crash page loaded. */
async function openSession(): Promise<Session> {
  const { chromium } = await import('playwright-core');
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: ARGS });
  const page = context.pages()[0] ?? (await context.newPage());
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${server.url}/page/opfs-crash-page.html`);
  await page.waitForFunction(() => (globalThis as unknown as { ready?: boolean }).ready === true, undefined, { timeout: 20_000 });
  const worker = <T>(op: string, args: Record<string, unknown> = {}) =>
    page.evaluate(([o, a]) => (globalThis as unknown as { inWorker: (op: string, args: unknown) => Promise<unknown> }).inWorker(o, a), [op, args] as const) as Promise<T>;
  return { page, context, errors, worker };
}

/** An opfs file copied out of the browser into `name` under tmp. */
async function copyOut(session: Session, opfsPath: string, name: string): Promise<string> {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, Buffer.from(await session.worker<string>('fileBase64', { path: opfsPath }), 'base64'));
  return file;
}

/** Writes 0 … flushed-1 of the burst as qemu-img reads them from `file`: the indices that differ. */
function missingInQemu(file: string, flushed: number): number[] {
  const raw = `${file}.raw`;
  execFileSync('qemu-img', ['convert', '-O', 'raw', file, raw]);
  const bytes = fs.readFileSync(raw);
  const missing: number[] = [];
  for (let i = 0; i < flushed; i++) {
    const at = burstOffset(i, BURST.stride);
    if (!Buffer.from(pattern(BURST.length, i)).equals(bytes.subarray(at, at + BURST.length))) missing.push(i);
  }
  return missing;
}

interface Recovery {
  error?: { code: string; message: string };
  check: { corruptions: number; leaks: number; leaksFixed: number; corruptionsFixed: number; checkErrors: number };
  again: { corruptions: number; leaks: number; checkErrors: number };
  missing: number[];
  locking: string;
}

/** Repairs and reads back in a fresh worker, then checks the copy with qemu-img: every flushed write is there. */
async function expectRecovered(session: Session, opfsPath: string, flushed: number, name: string): Promise<void> {
  const r = await session.worker<Recovery>('recover', { path: opfsPath, stride: BURST.stride, length: BURST.length, flushed });
  // the read-write open took the Web Lock: the dead writer's lock was released
  expect(r.error).toBeUndefined();
  expect(r.locking).toBe('web-locks');
  expect(r.check.checkErrors).toBe(0);
  // after a repair, leaks and corruptions count what the second pass still finds (qemu-img's
  // report); what the first pass fixed is in leaksFixed / corruptionsFixed, which may be any number
  expect(r.check.leaks).toBe(0);
  expect(r.check.corruptions).toBe(0);
  expect(r.again).toMatchObject({ corruptions: 0, leaks: 0, checkErrors: 0 });
  expect(r.missing).toEqual([]);
  const file = await copyOut(session, opfsPath, name);
  execFileSync('qemu-img', ['check', '-f', 'qcow2', file]); // exit 0: no errors, no leaks
  expect(missingInQemu(file, flushed)).toEqual([]);
}

describe.skipIf(!ready)('the opfs driver when a writer dies, its storage facts, and opfs backing chains', () => {
  it('a worker terminated in the middle of a qcow2 write burst: the next open gets the lock, check -r repairs, every flushed write reads back, qemu-img check passes', async () => {
    const session = s!;
    const r = await session.page.evaluate(([args, killAt]) => (globalThis as unknown as { burst: (a: unknown, k: number) => Promise<{ flushed: number; killed: boolean }> }).burst(args, killAt), [
      { path: 'crash/worker.qcow2', ...BURST },
      KILL_AT,
    ] as const);
    expect(r).toMatchObject({ killed: true });
    expect(r.flushed).toBeGreaterThanOrEqual(KILL_AT);
    await expectRecovered(session, 'crash/worker.qcow2', r.flushed, 'worker.qcow2');
    expect(session.errors).toEqual([]);
  }, 120_000);

  it('info() shows the storage estimate and persistence; a read-write open asks persist() once per realm, a read-only one never', async () => {
    const session = s!;
    type Facts = {
      infos: { storageUsage: number; storageQuota: number; storagePersisted: boolean; callsSoFar: number }[];
      canPersist: boolean;
      persisted: boolean;
      estimate: { quota: number };
    };
    const expectFacts = (r: Facts) => {
      expect(r.estimate.quota).toBeGreaterThan(0);
      for (const i of r.infos) {
        // the quota follows the disk's free space, which other programs change
        expect(Math.abs(i.storageQuota - r.estimate.quota)).toBeLessThan(r.estimate.quota / 100);
        expect(i.storageUsage).toBeGreaterThan(0);
        expect(i.storageUsage).toBeLessThanOrEqual(r.estimate.quota);
        expect(i.storagePersisted).toBe(r.persisted);
      }
    };
    // a worker has no persist() (Window only): the facts still show
    const inWorker = await session.worker<Facts>('storageInfo', { opens: [['facts/a.raw', false]] });
    expect(inWorker.canPersist).toBe(false);
    expectFacts(inWorker);
    const opens = [
      ['facts/a.raw', true],
      ['facts/b.raw', false],
      ['facts/c.raw', false],
    ];
    const inPage = (await session.page.evaluate((o) => (globalThis as unknown as { inPage: (op: string, a: unknown) => Promise<unknown> }).inPage('storageInfo', { opens: o }), opens)) as Facts;
    expect(inPage.canPersist).toBe(true);
    expect(inPage.infos.map((i) => i.callsSoFar)).toEqual([0, 1, 1]);
    expectFacts(inPage);
    expect(session.errors).toEqual([]);
  }, 60_000);

  const size = 8 * MiB;
  const baseWrites = [
    [0, 256 * 1024, 11],
    [3 * MiB, MiB, 12],
  ];
  const writes = [
    [128 * 1024, 200_000, 13],
    [3 * MiB + 4096, 70_000, 14],
    [size - 65536, 65536, 15],
  ];
  const guest = new Uint8Array(size);
  for (const [offset, length, seed] of [...baseWrites, ...writes]) guest.set(pattern(length, seed), offset);
  const guestHash = sha256(guest);

  it('qcow2 overlays on opfs over an opfs base named relatively and as opfs:PATH; qemu-img reads the chain copied out', async () => {
    const session = s!;
    const rel = await session.worker('opfsChain', { base: 'chain/base.qcow2', overlay: 'chain/over.qcow2', backingName: 'base.qcow2', size, baseWrites, writes });
    expect(rel).toEqual({ hash: guestHash, backing: 'chain/base.qcow2' });
    const abs = await session.worker('opfsChain', { base: 'chain2/base.qcow2', overlay: 'vms/over2.qcow2', backingName: 'opfs:chain2/base.qcow2', size, baseWrites, writes });
    expect(abs).toEqual({ hash: guestHash, backing: 'chain2/base.qcow2' });
    // a name that climbs out of the OPFS root is refused, not followed
    for (const bad of ['../../../escape.qcow2', '/a/../b.qcow2', 'opfs:x//y']) {
      expect(await session.worker('badBacking', { path: 'bad/over.qcow2', backingName: bad }), bad).toMatchObject({ error: { code: 'EINVAL' } });
    }
    // the relative name means the same to qemu-img, with the base beside the overlay
    fs.mkdirSync(path.join(tmp, 'chain'));
    await copyOut(session, 'chain/base.qcow2', 'chain/base.qcow2');
    const over = await copyOut(session, 'chain/over.qcow2', 'chain/over.qcow2');
    execFileSync('qemu-img', ['check', over]);
    const raw = `${over}.raw`;
    execFileSync('qemu-img', ['convert', '-O', 'raw', over, raw]);
    expect(sha256(fs.readFileSync(raw))).toBe(guestHash);
    expect(session.errors).toEqual([]);
  }, 60_000);

  let burstFlushed = 0;
  it('the whole browser context closed in the middle of a qcow2 write burst: a new context repairs and finds every flushed write; the opfs chains reopen by their stored names', async () => {
    const session = s!;
    await session.page.evaluate((args) => (globalThis as unknown as { burst: (a: unknown) => Promise<unknown> }).burst(args), { path: 'crash/context.qcow2', ...BURST });
    await session.page.waitForFunction((n) => (globalThis as unknown as { progress: { flushed: number } }).progress.flushed >= n, KILL_AT, { timeout: 60_000, polling: 5 });
    const before = await session.page.evaluate(() => (globalThis as unknown as { progress: { flushed: number; done?: boolean } }).progress);
    expect(before.done).toBeUndefined();
    // the burst is still writing when the browser goes; the count read just before is a lower bound
    expect(session.errors).toEqual([]);
    await session.context.close();
    s = await openSession();
    burstFlushed = before.flushed;
    await expectRecovered(s, 'crash/context.qcow2', burstFlushed, 'context.qcow2');
    expect(await s.worker('hashChain', { path: 'chain/over.qcow2' })).toEqual({ hash: guestHash, backing: 'chain/base.qcow2' });
    expect(await s.worker('hashChain', { path: 'vms/over2.qcow2' })).toEqual({ hash: guestHash, backing: 'chain2/base.qcow2' });
    expect(s.errors).toEqual([]);
  }, 120_000);

  it('the commit job merges an overlay on opfs into its opfs base (given read-write, or found by name and reopened read-write): the base alone then reads as the chain did; qemu-img agrees', async () => {
    const session = s!;
    const r = await session.worker('commitChain', { overlay: 'chain/over.qcow2', base: 'chain/base.qcow2' });
    expect(r).toMatchObject({ before: guestHash, after: guestHash, baseBacking: null, pivoted: true, baseReadOnly: false });
    // the base found by the overlay's header opens read-only; the job reopens it read-write (a new sync access handle and lock)
    const byName = await session.worker('commitChain', { overlay: 'vms/over2.qcow2', base: 'chain2/base.qcow2', byName: true });
    expect(byName).toMatchObject({ before: guestHash, after: guestHash, baseBacking: null, pivoted: true, baseReadOnly: true });
    const base = await copyOut(session, 'chain/base.qcow2', 'committed-base.qcow2');
    execFileSync('qemu-img', ['check', base]);
    const raw = `${base}.raw`;
    execFileSync('qemu-img', ['convert', '-O', 'raw', base, raw]);
    expect(sha256(fs.readFileSync(raw))).toBe(guestHash);
    expect(session.errors).toEqual([]);
  }, 60_000);
});
