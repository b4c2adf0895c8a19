/**
 * Boots SeaBIOS in v86 from a blocklayer drive: the guest (tests/fixtures/v86/boot.asm) reads
 * sectors through INT 13h, prints their checksum, writes a sector and prints DONE.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { V86 } from 'v86';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type V86DiskErrorEvent, toV86Disk } from '../../src/adapters/v86.js';
import { BlockLayer } from '../../src/index.js';
import { haveProgram, ok } from '../helpers/tools.js';
import { assembleBootSector, BIOS, baseOptions, bootV86, buildDisk, DATA_SECTORS, expectedSumLine, guestSector, VGA_BIOS, WRITE_LBA } from '../helpers/v86-boot.js';

const haveBios = fs.existsSync(BIOS) && fs.existsSync(VGA_BIOS);
const haveNasm = haveProgram('nasm');
const missing = [haveBios ? '' : 'seabios', haveNasm ? '' : 'nasm'].filter(Boolean);
if (missing.length > 0 && process.env.CI === 'true') throw new Error(`${missing.join(' and ')} missing in CI: .ci/run must install them`);
if (missing.length > 0) console.log(`v86 boot tests skipped: install ${missing.join(' and ')} (apt-get install seabios nasm)`);
const haveQemuImg = haveProgram('qemu-img');
if (!haveQemuImg && process.env.CI === 'true') throw new Error('qemu-img missing in CI: .ci/run must install qemu-utils');
if (!haveQemuImg && missing.length === 0) console.log('v86 qcow2 boot skipped: install qemu-utils (apt-get install qemu-utils) to make the image');

const IOPS = 20;

describe.skipIf(missing.length > 0)('v86 boots SeaBIOS from a blocklayer drive', () => {
  let dir: string;
  let raw: Uint8Array;
  const layer = new BlockLayer();
  const file = (name: string) => path.join(dir, name);
  const writtenSector = (image: Uint8Array) => image.subarray(WRITE_LBA * 512, (WRITE_LBA + 1) * 512);

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-v86-'));
    raw = buildDisk(await assembleBootSector(dir));
  });
  afterAll(async () => {
    await layer.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function rawCopy(name: string): string {
    fs.writeFileSync(file(name), raw);
    return file(name);
  }

  it('boots a raw image: the guest reads the data sectors through INT 13h and its write lands in the file', async () => {
    const image = rawCopy('boot.raw');
    const drive = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: image } });
    const disk = toV86Disk(drive);
    const errors: V86DiskErrorEvent[] = [];
    disk.on('io-error', (e) => errors.push(e));
    const boot = await bootV86(disk);
    expect(boot.serial).toContain('BOOT');
    expect(boot.serial).toContain(expectedSumLine());
    expect(boot.serial).toContain('WRITE OK');
    expect(errors).toEqual([]);
    await disk.flush();
    expect(new Uint8Array(await drive.read(WRITE_LBA * 512, 512))).toEqual(guestSector());
    const stats = drive.stats();
    // Sector 0 comes from the cache v86 fills before boot; each data sector is one INT 13h call.
    expect(stats.rdOperations).toBeGreaterThanOrEqual(1 + DATA_SECTORS);
    expect(stats.rdBytes).toBeGreaterThanOrEqual(512 * (1 + DATA_SECTORS));
    expect(stats.wrOperations).toBeGreaterThanOrEqual(1);
    await drive.close();
    const onDisk = new Uint8Array(fs.readFileSync(image));
    expect(writtenSector(onDisk)).toEqual(guestSector());
    // Nothing else changed.
    onDisk.set(writtenSector(raw), WRITE_LBA * 512);
    expect(Buffer.compare(onDisk, raw)).toBe(0);
  }, 120_000);

  it.skipIf(!haveQemuImg)('boots a qcow2 image opened read-only: reads work, the guest write is refused with EROFS and the image is unchanged', async () => {
    const qcow2 = file('boot.qcow2');
    await ok('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rawCopy('for-qcow2.raw'), qcow2]);
    const before = fs.readFileSync(qcow2);
    const drive = await layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: qcow2 } });
    const disk = toV86Disk(drive);
    const errors: V86DiskErrorEvent[] = [];
    disk.on('io-error', (e) => errors.push(e));
    const boot = await bootV86(disk);
    expect(boot.serial).toContain(expectedSumLine());
    expect(boot.serial).toContain('DONE');
    await disk.flush();
    // v86's PIO write path tells the guest "done" before the disk answers, so the guest prints WRITE OK;
    // the refusal reaches the host as an io-error and the write is never reported done to v86.
    expect(errors.map((e) => [e.operation, e.offset, e.length, e.error.code])).toEqual([['write', WRITE_LBA * 512, 512, 'EROFS']]);
    expect(drive.stats().rdOperations).toBeGreaterThanOrEqual(1 + DATA_SECTORS);
    expect(new Uint8Array(await drive.read(WRITE_LBA * 512, 512))).toEqual(writtenSector(raw));
    await drive.close();
    expect(Buffer.compare(fs.readFileSync(qcow2), before)).toBe(0);
  }, 120_000);

  it('a v86 state snapshot carries the adapter cache: restored on a fresh adapter, sector 0 is there for the geometry probe', async () => {
    const drive = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: rawCopy('state.raw') } });
    const boot = await bootV86(toV86Disk(drive), { keep: true });
    const emulator = boot.emulator as V86;
    const state = await emulator.save_state();
    await emulator.destroy();
    // A restore skips the boot-time get_and_cache: the cache must come back through set_state.
    const fresh = toV86Disk(drive);
    const restored = new V86({ ...baseOptions(), hda: fresh, initial_state: { buffer: state }, autostart: false });
    await new Promise<void>((resolve) => restored.add_listener('emulator-loaded', () => resolve()));
    await restored.destroy();
    expect(fresh.get_from_cache(0, 512)).toEqual(raw.subarray(0, 512));
    await drive.close();
  }, 120_000);

  it(`boots through an iops=${IOPS} limit: the reads wait their turn, and the boot takes at least what the limit implies`, async () => {
    const free = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: rawCopy('free.raw') } });
    const freeBoot = await bootV86(toV86Disk(free));
    await free.close();

    const drive = await layer.openDrive({ driver: 'raw', throttle: { iopsTotal: IOPS }, file: { driver: 'file', filename: rawCopy('throttled.raw') } });
    const boot = await bootV86(toV86Disk(drive));
    expect(boot.serial).toContain(expectedSumLine());
    const stats = drive.stats();
    const ops = stats.rdOperations + stats.wrOperations;
    expect(stats.rdOperations).toBeGreaterThanOrEqual(1 + DATA_SECTORS);
    // A leaky bucket of IOPS requests/s lets through a burst (avg/10 = 2 requests; a little slack here)
    // and then at most IOPS per second, however the requests are spaced: a lower bound on the boot time.
    const minimumNs = ((ops - 5) / IOPS) * 1e9;
    expect(stats.throttle?.delayedRequests).toBeGreaterThan(0);
    expect(stats.throttle?.totalDelayNs).toBeGreaterThan(0);
    expect(boot.ms).toBeGreaterThanOrEqual(minimumNs / 1e6);
    // The guest spins while it waits for the disk: more emulated work than the same boot unthrottled.
    expect(boot.instructions).toBeGreaterThan(freeBoot.instructions);
    console.log(
      `v86 boot: ${freeBoot.ms.toFixed(0)} ms, ${freeBoot.instructions} instructions unthrottled; ` +
        `${boot.ms.toFixed(0)} ms, ${boot.instructions} instructions at iops=${IOPS} (${ops} requests, ${stats.throttle?.delayedRequests} delayed, ${((stats.throttle?.totalDelayNs ?? 0) / 1e6).toFixed(0)} ms waited)`,
    );
    await drive.close();
  }, 180_000);
});
