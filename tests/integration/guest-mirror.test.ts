// Issue #24 with a real guest: QEMU (qemu-system-x86_64, TCG, SeaBIOS) boots from our NBD
// export of a qcow2 while blockdev-mirror copies it (QMP, slowed with `speed`). The guest
// (tests/fixtures/guest/scattered-writes.asm) writes its first phase while the copy runs, its
// second once the job is READY, its third after job-complete pivoted the export onto the target.
// qemu-img then reads both images: the source holds the first two phases, the target all three,
// and nothing else differs from the image the guest booted. Once in process (our QmpServer and
// NbdServer, a unix socket), once through `blocklayer serve` in its own process (NBD over TCP);
// and with v86 in process writing through toV86Disk(drive) while layer.startJob mirrors the drive.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { toV86Disk, type V86DiskErrorEvent } from '../../src/adapters/v86.js';
import { NbdServer } from '../../src/index.js';
import { NbdExportManager } from '../../src/qmp/exports.js';
import { layerSuite } from '../helpers/layer-suite.js';
import {
  applyGuestWrites,
  assembleGuest,
  bootQemuGuest,
  bootV86Guest,
  type GuestPhases,
  guestSumLine,
  guestToolsMissing,
  phaseLine,
  SECTOR,
} from '../helpers/qemu-guest.js';
import { QmpClient, type QmpDaemon, startOurQmp } from '../helpers/qmp-client.js';
import { serve } from '../helpers/serve-process.js';
import { ok, run } from '../helpers/tools.js';
import { dataByte } from '../helpers/v86-boot.js';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
/** The source holds data in its first DATA_BYTES (what the mirror copies at `speed`); zeroes after. */
const DATA_BYTES = 8 * MiB;
/** Slow enough that the bulk copy outlasts the guest's boot and first phase (32 s for the data). */
const SLOW_SPEED = 256 * 1024;
/** The mirror's buffer, below the disk's size: the copy goes in steps, each waiting its turn at `speed`. */
const BUF_SIZE = 256 * 1024;

const { qemu: missing, v86: missingV86 } = guestToolsMissing('mirror test', { qemu: ['qemu-img'], v86: ['qemu-img'] });

/** During the copy, while READY, after the pivot: some runs over earlier ones, in data and in zeroes. */
const PHASES: GuestPhases = [
  [
    { lba: 2, count: 4, seed: 0x13 },
    { lba: 4000, count: 100, seed: 0x24 },
    { lba: 16000, count: 16, seed: 0x35 },
    { lba: 24000, count: 8, seed: 0x46 },
  ],
  [
    { lba: 4050, count: 10, seed: 0x57 },
    { lba: 16383, count: 2, seed: 0x68 },
    { lba: SIZE / SECTOR - 1, count: 1, seed: 0x79 },
  ],
  [
    { lba: 4, count: 1, seed: 0x8a },
    { lba: 30000, count: 3, seed: 0x9b },
  ],
];

const suite = layerSuite('guest-mirror-');

/** qemu-img compare of a qcow2 against raw bytes written beside it. */
async function compareWith(qcow2: string, bytes: Uint8Array, name: string): Promise<string> {
  const raw = path.join(suite.dir, `${name}.raw`);
  fs.writeFileSync(raw, bytes);
  const r = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', qcow2, raw]);
  return r.stdout + r.stderr;
}

type JobInfo = { device: string; ready: boolean; status: string; offset: number; len: number };

/** The images of one run: the bytes the guest boots, the source made from them, an empty target. */
async function images(): Promise<{ original: Uint8Array; src: string; tgt: string }> {
  const original = new Uint8Array(SIZE);
  for (let o = SECTOR; o < DATA_BYTES; o++) original[o] = dataByte(o);
  original.set(await assembleGuest(suite.dir, PHASES), 0);
  const raw = path.join(suite.dir, 'original.raw');
  const src = path.join(suite.dir, 'src.qcow2');
  const tgt = path.join(suite.dir, 'tgt.qcow2');
  fs.writeFileSync(raw, original);
  await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, src]);
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', tgt, String(SIZE)]);
  return { original, src, tgt };
}

/**
 * The mirror around the guest, over QMP: the job started slow, the guest booted from `drive`
 * (exported node `src`), phase 1 during the copy, phase 2 while READY, the pivot, phase 3, DONE.
 */
async function mirrorAroundGuest(q: QmpClient, drive: string, original: Uint8Array): Promise<void> {
  await q.ok('blockdev-mirror', { 'job-id': 'm', device: 'src', target: 'tgt', sync: 'full', speed: SLOW_SPEED, 'buf-size': BUF_SIZE });
  const guest = bootQemuGuest(drive);
  suite.cleanups.push(() => guest.stop());

  // Phase 1 landed while the bulk copy was still under way.
  await guest.waitFor(phaseLine(1));
  const [during] = (await q.ok('query-block-jobs')) as JobInfo[];
  expect(during).toMatchObject({ device: 'm', ready: false, status: 'running' });
  // Copied from the start on: the first run (LBA 2) came after its chunk was copied, so the mirror copies it again.
  expect(during!.offset).toBeGreaterThan(0);
  expect(during!.offset).toBeLessThan(during!.len);
  expect(guest.serial()).toContain(guestSumLine(original));

  // Phase 2 while the job is READY (the target follows the source).
  await q.ok('block-job-set-speed', { device: 'm', speed: 0 });
  await q.waitEvent('BLOCK_JOB_READY', (d) => d.device === 'm', 30_000);
  guest.proceed();
  await guest.waitFor(phaseLine(2));

  // The pivot: the export (and the guest's connection) now serve the target; phase 3 goes there only.
  await q.ok('job-complete', { id: 'm' });
  await q.waitJobStatus('m', 'null', 30_000);
  const completed = q.events.find((e) => e.event === 'BLOCK_JOB_COMPLETED');
  expect(completed?.data?.error).toBeUndefined();
  expect(completed?.data?.offset).toBe(completed?.data?.len);
  guest.proceed();
  await guest.waitFor('DONE');
  expect(await guest.exited, guest.stderr()).toBe(0); // powered off after DONE
  expect(guest.serial()).not.toContain('IO ERR');
}

/** What qemu-img reads once everything is closed: the source holds phases 1 and 2, the target all three. */
async function checkImages(original: Uint8Array, src: string, tgt: string): Promise<void> {
  await ok('qemu-img', ['check', src]);
  await ok('qemu-img', ['check', tgt]);
  expect(await compareWith(src, applyGuestWrites(original, PHASES, 2), 'src-expected')).toContain('Images are identical');
  expect(await compareWith(tgt, applyGuestWrites(original, PHASES), 'tgt-expected')).toContain('Images are identical');
  // Source and target part at the first sector phase 3 wrote, and nowhere before it.
  const first = Math.min(...PHASES[2]!.map((r) => r.lba)) * SECTOR;
  const cmp = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', src, tgt]);
  expect(cmp.stdout).toContain(`Content mismatch at offset ${first}!`);
}

describe('mirror of a disk a real guest boots from', () => {
  it.skipIf(missing.length > 0)('QEMU boots from the NBD export during blockdev-mirror: its writes before READY, while READY and after the pivot end where they belong', { timeout: 90_000 }, async () => {
    const { original, src, tgt } = await images();
    await suite.layer.openDrive({ id: 'disk0', driver: 'qcow2', nodeName: 'src', file: { driver: 'file', filename: src } });
    await suite.layer.addNode({ driver: 'qcow2', nodeName: 'tgt', file: { driver: 'file', filename: tgt } });
    const nbd = new NbdServer();
    const sock = path.join(suite.dir, 'nbd.sock');
    await nbd.listen({ path: sock });
    suite.cleanups.push(() => nbd.close());
    const ours: QmpDaemon = await startOurQmp(suite.layer, suite.dir, { exports: new NbdExportManager(suite.layer, nbd) });
    suite.cleanups.push(() => ours.stop());
    const q = ours.qmp;
    await q.ok('block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'src', name: 'vm', writable: true });

    await mirrorAroundGuest(q, `file=nbd+unix:///vm?socket=${sock},format=raw,if=ide,cache=writeback`, original);
    // The drive on the source followed the export onto the target.
    const block = (await q.ok('query-block')) as { device: string; inserted: { 'node-name': string } }[];
    expect(block.find((b) => b.device === 'disk0')?.inserted['node-name']).toBe('tgt');

    await q.ok('block-export-del', { id: 'e0' });
    for (const c of suite.cleanups.splice(0).reverse()) await c();
    await suite.layer.close();
    await checkImages(original, src, tgt);
  });

  it.skipIf(missing.length > 0)('the same through `blocklayer serve --blockdev … --export … --qmp`, QEMU on NBD over TCP', { timeout: 90_000 }, async () => {
    const { original, src, tgt } = await images();
    const qmpSock = path.join(suite.dir, 'serve.qmp');
    const served = await serve(
      '--blockdev',
      `driver=qcow2,node-name=src,file.driver=file,file.filename=${src}`,
      '--blockdev',
      `driver=qcow2,node-name=tgt,file.driver=file,file.filename=${tgt}`,
      '--export',
      'type=nbd,id=e0,node-name=src,name=vm,writable=on',
      '-b',
      '127.0.0.1',
      '-p',
      '0',
      '--qmp',
      `unix:${qmpSock}`,
    );
    suite.cleanups.push(async () => {
      served.child.kill('SIGTERM');
      await served.exited;
    });
    const q = await QmpClient.connect(qmpSock);
    suite.cleanups.push(async () => q.close());

    await mirrorAroundGuest(q, `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${served.port},export=vm,if=ide,cache=writeback`, original);

    q.close();
    served.child.kill('SIGTERM');
    expect(await served.exited, served.stderr()).toBe(0);
    for (const c of suite.cleanups.splice(0).reverse()) await c();
    await checkImages(original, src, tgt);
  });

  it.skipIf(missingV86.length > 0)('v86 boots from a drive (toV86Disk) while suite.layer.startJob mirrors it: the drive ends on the target with every write where it belongs', { timeout: 120_000 }, async () => {
    const { original, src, tgt } = await images();
    const drive = await suite.layer.openDrive({ id: 'disk0', driver: 'qcow2', nodeName: 'src', file: { driver: 'file', filename: src } });
    await suite.layer.addNode({ driver: 'qcow2', nodeName: 'tgt', file: { driver: 'file', filename: tgt } });
    const job = await suite.layer.startJob({ type: 'mirror', device: 'disk0', target: 'tgt', sync: 'full', speed: SLOW_SPEED, bufSize: BUF_SIZE });
    const disk = toV86Disk(drive);
    const errors: V86DiskErrorEvent[] = [];
    disk.on('io-error', (e) => errors.push(e));
    const guest = bootV86Guest(disk);
    suite.cleanups.push(() => guest.stop());

    await guest.waitFor(phaseLine(1), 60_000);
    await disk.flush(); // v86's PIO writes tell the guest "done" before the drive has them
    expect(job.isReady).toBe(false);
    expect(job.progress.current).toBeGreaterThan(0);
    expect(job.progress.current).toBeLessThan(job.progress.total);
    expect(guest.serial()).toContain(guestSumLine(original));

    const ready = new Promise<void>((resolve) => job.once('ready', () => resolve()));
    job.setSpeed(0);
    await ready;
    guest.proceed();
    await guest.waitFor(phaseLine(2), 60_000);
    await disk.flush();

    job.complete();
    await job.wait();
    expect(drive.node.name).toBe('tgt');
    guest.proceed();
    await guest.waitFor('DONE', 60_000);
    await guest.stop();
    await disk.flush();
    expect(errors).toEqual([]);
    expect(guest.serial()).not.toContain('IO ERR');

    for (const c of suite.cleanups.splice(0).reverse()) await c();
    await suite.layer.close();
    await checkImages(original, src, tgt);
  });
});
