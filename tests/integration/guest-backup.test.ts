// Issue #23 with real guests: a whole incremental backup cycle around a booting machine.
// QEMU (qemu-system-x86_64, TCG, SeaBIOS) boots from our NBD export of a qcow2 made by qemu-img;
// a full copy is taken by nbdcopy when the dirty bitmap starts (QMP block-dirty-bitmap-add); the
// guest (tests/fixtures/guest/scattered-writes.asm) writes scattered runs, some over each other;
// then only the extents `nbdinfo --map=qemu:dirty-bitmap:b0` reports are copied by qemu-img onto
// the full copy, which then equals the disk (sha256 and qemu-img compare). The dirty extents are
// exactly the guest's writes rounded to the granularity; the bitmap, stored in the qcow2 at close,
// maps the same through qemu-nbd -B. The same cycle in process with v86
// writing through toV86Disk(drive) and drive.dirtyExtents() walked.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { toV86Disk, type V86DiskErrorEvent } from '../../src/adapters/v86.js';
import { NbdServer } from '../../src/index.js';
import { NbdExportManager } from '../../src/qmp/exports.js';
import { layerSuite } from '../helpers/layer-suite.js';
import { startQemuDaemon, stopPid } from '../helpers/qemu-daemons.js';
import {
  applyGuestWrites,
  assembleGuest,
  bootQemuGuest,
  bootV86Guest,
  type Guest,
  type GuestPhases,
  guestGranules,
  guestSumLine,
  guestToolsMissing,
  SECTOR,
} from '../helpers/qemu-guest.js';
import { type QmpDaemon, startOurQmp } from '../helpers/qmp-client.js';
import { ok } from '../helpers/tools.js';
import { dataByte } from '../helpers/v86-boot.js';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
/** The image holds data in its first DATA_BYTES; the rest reads as zeroes (unallocated in the qcow2). */
const DATA_BYTES = 4 * MiB;

const { qemu: missingQemu, v86: missingV86 } = guestToolsMissing('backup test', { qemu: ['qemu-img', 'qemu-nbd', 'nbdcopy', 'nbdinfo'], v86: ['qemu-img'] });

/** Three phases of scattered runs: across granule edges, over each other, at the disk's last sector, in data and in zeroes. */
const PHASES: GuestPhases = [
  [
    { lba: 3, count: 2, seed: 0x10 },
    { lba: 5110, count: 20, seed: 0x21 },
    { lba: 20000, count: 127, seed: 0x32 },
  ],
  [
    { lba: 5115, count: 3, seed: 0x43 },
    { lba: 24576, count: 1, seed: 0x54 },
    { lba: SIZE / SECTOR - 1, count: 1, seed: 0x65 },
  ],
  [
    { lba: 3, count: 1, seed: 0x76 },
    { lba: DATA_BYTES / SECTOR - 1, count: 2, seed: 0x87 },
  ],
];

const suite = layerSuite('guest-backup-');

const sha = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

/** The guest's disk as raw bytes: its boot sector, a pattern in the data area, zeroes after. */
async function guestDisk(): Promise<Uint8Array> {
  const disk = new Uint8Array(SIZE);
  for (let o = SECTOR; o < DATA_BYTES; o++) disk[o] = dataByte(o);
  disk.set(await assembleGuest(suite.dir, PHASES), 0);
  return disk;
}

/** `disk` as a qcow2 made by qemu-img (zeroes left unallocated). */
async function qcow2Of(disk: Uint8Array, name: string): Promise<string> {
  const raw = path.join(suite.dir, `${name}.raw`);
  const qcow2 = path.join(suite.dir, `${name}.qcow2`);
  fs.writeFileSync(raw, disk);
  await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2]);
  fs.rmSync(raw);
  return qcow2;
}

/** The dirty extents of bitmap b0 as nbdinfo maps them over NBD. */
async function dirtyMap(uri: string): Promise<{ offset: number; length: number }[]> {
  const map = JSON.parse(await ok('nbdinfo', ['--json', '--map=qemu:dirty-bitmap:b0', uri])) as { offset: number; length: number; type: number }[];
  return map.filter((e) => e.type === 1).map((e) => ({ offset: e.offset, length: e.length }));
}

/** Every sector where `a` and `b` differ lies inside one of `extents`. */
function changesInside(a: Uint8Array, b: Uint8Array, extents: readonly { offset: number; length: number }[]): number[] {
  const outside: number[] = [];
  for (let o = 0; o < a.length; o += SECTOR) {
    if (Buffer.compare(a.subarray(o, o + SECTOR), b.subarray(o, o + SECTOR)) === 0) continue;
    if (!extents.some((e) => o >= e.offset && o + SECTOR <= e.offset + e.length)) outside.push(o);
  }
  return outside;
}

describe('incremental backup cycle around a real guest', () => {
  it.skipIf(missingQemu.length > 0)(
    'QEMU boots from the NBD export and writes; the extents nbdinfo maps dirty, copied by qemu-img onto the nbdcopy full copy, make it equal the disk',
    { timeout: 60_000 },
    async () => {
      const GRANULARITY = 64 * 1024;
      const original = await guestDisk();
      const image = await qcow2Of(original, 'disk');
      await suite.layer.openDrive({ id: 'disk0', driver: 'qcow2', nodeName: 'disk', file: { driver: 'file', filename: image } });
      const nbd = new NbdServer();
      const sock = path.join(suite.dir, 'nbd.sock');
      await nbd.listen({ path: sock });
      suite.cleanups.push(() => nbd.close());
      const ours: QmpDaemon = await startOurQmp(suite.layer, suite.dir, { exports: new NbdExportManager(suite.layer, nbd) });
      suite.cleanups.push(() => ours.stop());
      const q = ours.qmp;
      await q.ok('block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'disk', name: 'vm', writable: true });
      const vm = `nbd+unix:///vm?socket=${sock}`;

      // Full backup, the bitmap started with it (nothing writes in between).
      await q.ok('block-dirty-bitmap-add', { node: 'disk', name: 'b0', granularity: GRANULARITY, persistent: true });
      const copy = path.join(suite.dir, 'copy.raw');
      await ok('nbdcopy', [vm, copy]);
      expect(sha(fs.readFileSync(copy))).toBe(sha(original));

      const guest = bootQemuGuest(`file=${vm},format=raw,if=ide,cache=writeback`);
      suite.cleanups.push(() => guest.stop());
      await guest.runToEnd(PHASES.length);
      expect(await guest.exited, guest.stderr()).toBe(0); // powered off after DONE
      expect(guest.serial()).toContain(guestSumLine(original));
      expect(guest.serial()).not.toContain('IO ERR');

      // Incremental backup: the bitmap frozen and served read-only beside the disk (libvirt's pull mode).
      await q.ok('block-dirty-bitmap-disable', { node: 'disk', name: 'b0' });
      await q.ok('block-export-add', { type: 'nbd', id: 'e1', 'node-name': 'disk', name: 'inc', writable: false, bitmaps: ['b0'] });
      const dirty = await dirtyMap(`nbd+unix:///inc?socket=${sock}`);
      expect(dirty).toEqual(guestGranules(PHASES, GRANULARITY));

      // Only the dirty extents, read by qemu-img through its nbd driver, written in place into the copy.
      for (const e of dirty) {
        const window = `driver=raw,offset=${e.offset},size=${e.length}`;
        await ok('qemu-img', [
          'convert',
          '-n',
          '--image-opts',
          `${window},file.driver=nbd,file.server.type=unix,file.server.path=${sock},file.export=inc`,
          '--target-image-opts',
          `${window},file.driver=file,file.filename=${copy}`,
        ]);
      }
      const whole = path.join(suite.dir, 'whole.raw');
      await ok('nbdcopy', [vm, whole]);
      const disk = new Uint8Array(fs.readFileSync(whole));
      const expected = applyGuestWrites(original, PHASES);
      expect(sha(disk)).toBe(sha(expected)); // the guest wrote exactly its table, nothing else changed
      expect(sha(fs.readFileSync(copy))).toBe(sha(disk));
      expect(changesInside(original, disk, dirty)).toEqual([]);

      await q.ok('block-export-del', { id: 'e1' });
      await q.ok('block-export-del', { id: 'e0' });
      for (const c of suite.cleanups.splice(0).reverse()) await c();
      await suite.layer.close();
      await ok('qemu-img', ['check', image]);
      expect(await ok('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, copy])).toContain('Images are identical');
      // The bitmap went into the image at close: QEMU's own server maps the same extents from it.
      const qsock = path.join(suite.dir, 'qemu-nbd.sock');
      const pid = startQemuDaemon('qemu-nbd', ['-r', '-B', 'b0', '-f', 'qcow2', '-k', qsock, image], suite.dir);
      suite.cleanups.push(() => stopPid(pid));
      expect(await dirtyMap(`nbd+unix:///?socket=${qsock}`)).toEqual(dirty);
    },
  );

  it.skipIf(missingV86.length > 0)(
    'v86 writes through toV86Disk on a drive with a dirty bitmap; drive.dirtyExtents copied onto the full copy make it equal the disk',
    { timeout: 120_000 },
    async () => {
      const GRANULARITY = 4096;
      const original = await guestDisk();
      const image = await qcow2Of(original, 'v86');
      const drive = await suite.layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: image } });
      const full = new Uint8Array(await drive.read(0, SIZE));
      drive.addDirtyBitmap('b', { granularity: GRANULARITY });
      expect(sha(full)).toBe(sha(original));

      const disk = toV86Disk(drive);
      const errors: V86DiskErrorEvent[] = [];
      disk.on('io-error', (e) => errors.push(e));
      const guest: Guest = bootV86Guest(disk);
      suite.cleanups.push(() => guest.stop());
      await guest.runToEnd(PHASES.length);
      await guest.stop();
      await disk.flush(); // v86's PIO writes tell the guest "done" before the drive has them
      expect(errors).toEqual([]);
      expect(guest.serial()).toContain(guestSumLine(original));
      expect(guest.serial()).not.toContain('IO ERR');

      const dirty: { offset: number; length: number }[] = [];
      for await (const e of drive.dirtyExtents('b')) dirty.push({ offset: e.offset, length: e.length });
      expect(dirty).toEqual(guestGranules(PHASES, GRANULARITY));
      for (const e of dirty) full.set(new Uint8Array(await drive.read(e.offset, e.length)), e.offset);
      const now = new Uint8Array(await drive.read(0, SIZE));
      expect(sha(now)).toBe(sha(applyGuestWrites(original, PHASES)));
      expect(sha(full)).toBe(sha(now));
      expect(changesInside(original, now, dirty)).toEqual([]);

      await drive.close();
      const copy = path.join(suite.dir, 'v86-copy.raw');
      fs.writeFileSync(copy, full);
      await ok('qemu-img', ['check', image]);
      expect(await ok('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, copy])).toContain('Images are identical');
    },
  );
});
