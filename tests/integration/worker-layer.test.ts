/**
 * A BlockLayer in a worker thread, its drives used from the main thread (blocklayer/worker):
 * real images written there are judged by qemu-img; errors, events, aborts, shared memory and a
 * dying worker behave as a Drive in the same thread would.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toV86Disk } from '../../src/adapters/v86.js';
import { BlockError, type IoErrorEvent } from '../../src/index.js';
import { connectWorkerLayer, type WorkerLayer } from '../../src/worker/index.js';
import { haveProgram } from '../helpers/tools.js';
import { assembleBootSector, BIOS, bootV86, buildDisk, expectedSumLine, guestSector, VGA_BIOS, WRITE_LBA } from '../helpers/v86-boot.js';

const BOOT = new URL('../helpers/tsx-worker.mjs', import.meta.url);
const CHILD = new URL('../helpers/worker-layer-child.ts', import.meta.url).href;
const haveQemuImg = haveProgram('qemu-img');
if (!haveQemuImg && process.env.CI === 'true') throw new Error('qemu-img missing in CI: .ci/run must install qemu-utils');

function startWorker(): Worker {
  return new Worker(BOOT, { workerData: { entry: CHILD } });
}

let dir: string;
let worker: Worker;
let layer: WorkerLayer;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-worker-'));
  worker = startWorker();
  layer = connectWorkerLayer(worker);
});
afterAll(async () => {
  await layer.close();
  await worker.terminate();
  fs.rmSync(dir, { recursive: true, force: true });
});

const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

describe('a layer in a worker thread', () => {
  it.skipIf(!haveQemuImg)('writes a qcow2 image from the main thread that qemu-img finds clean and equal to the data written', async () => {
    const image = path.join(dir, 'w.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '16M']);
    const drive = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: image } });
    expect(drive.length).toBe(16 * 1024 * 1024);
    const raw = Buffer.alloc(16 * 1024 * 1024);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 64; i++) {
      const offset = ((i * 37) % 256) * 65536 + (i % 3) * 512;
      const data = pattern(65536 - (i % 3) * 512, i);
      raw.set(data, offset);
      writes.push(drive.write(offset, data));
    }
    await Promise.all(writes);
    await drive.flush();
    const back = await drive.read(0, raw.length);
    expect(crypto.createHash('sha256').update(back).digest('hex')).toBe(crypto.createHash('sha256').update(raw).digest('hex'));
    await drive.close();
    expect(drive.closed).toBe(true);
    execFileSync('qemu-img', ['check', '-q', image]);
    const rawFile = path.join(dir, 'w.raw');
    fs.writeFileSync(rawFile, raw);
    execFileSync('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'raw', image, rawFile]);
  });

  it('rejects bad requests with the BlockError the worker made: code, field and offset kept', async () => {
    const drive = await layer.openDrive({ driver: 'memory', size: '1M' });
    const e = await drive.read(1024 * 1024 - 10, 100).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BlockError);
    expect(e).toMatchObject({ code: 'EINVAL', field: 'length', offset: 1024 * 1024 - 10 });
    await expect(drive.write(0, 'text' as never)).rejects.toMatchObject({ code: 'EINVAL', field: 'data' });
    await expect(layer.openDrive({ driver: 'memory', size: '1M', bogus: 1 } as never)).rejects.toMatchObject({ name: 'BlockError', code: 'EINVAL' });
    await drive.close();
    await expect(drive.read(0, 1)).rejects.toMatchObject({ code: 'ECLOSED' });
  });

  it('fills a caller buffer, and shared memory in place in the worker', async () => {
    const drive = await layer.openDrive({ driver: 'memory', size: '1M' });
    await drive.write(4096, pattern(8192, 3));
    const plain = new Uint8Array(8192);
    expect(await drive.read(4096, plain)).toBe(plain);
    expect(plain).toEqual(pattern(8192, 3));
    const shared = new Uint8Array(new SharedArrayBuffer(8192));
    expect(await drive.read(4096, shared)).toBe(shared);
    expect(shared).toEqual(pattern(8192, 3));
    // A write from shared memory: the worker reads the caller's bytes.
    shared.fill(0xab);
    await drive.write(0, shared);
    expect((await drive.read(0, 8192)).every((b) => b === 0xab)).toBe(true);
    await drive.close();
  });

  it('forwards events with their BlockErrors, and a stop policy pauses until resume()', async () => {
    const drive = await layer.openDrive({
      driver: 'blkdebug',
      rules: [{ event: 'write', code: 'ENOSPC', offset: 8192, once: true }],
      file: { driver: 'memory', size: '1M' },
      werror: 'stop',
    });
    const errors: IoErrorEvent[] = [];
    const events: string[] = [];
    drive.on('io-error', (e) => errors.push(e));
    drive.on('paused', (e) => events.push(`paused:${e.ioStatus}`));
    drive.on('resumed', (e) => events.push(`resumed:${e.retried}`));
    const held = drive.write(8192, pattern(4096, 9));
    await expect.poll(() => events).toEqual(['paused:nospace']);
    expect(drive.ioStatus).toBe('nospace');
    expect(errors).toHaveLength(1);
    expect(errors[0]?.error).toBeInstanceOf(BlockError);
    expect(errors[0]).toMatchObject({ operation: 'write', offset: 8192, action: 'stop', nospace: true, error: { code: 'ENOSPC' } });
    await drive.resume();
    await held;
    expect(events).toEqual(['paused:nospace', 'resumed:1']);
    expect(drive.ioStatus).toBe('ok');
    expect(await drive.read(8192, 4096)).toEqual(pattern(4096, 9));
    // As on a Drive in the same thread: a write held by `stop` and retried is one write, not a failure.
    expect(await drive.stats()).toMatchObject({ wrOperations: 1, failedWrOperations: 0 });
    await drive.close();
  });

  it('limits set from the main thread hold requests in the worker; an abort there rejects with the caller reason as cause', async () => {
    const drive = await layer.openDrive({ driver: 'null', size: '1G' });
    await drive.setLimits({ iopsTotal: 10 });
    expect(await drive.getLimits()).toMatchObject({ iopsTotal: 10 });
    await expect(drive.setLimits({ iopsTotal: -1 })).rejects.toMatchObject({ code: 'EINVAL' });
    const throttled: string[] = [];
    drive.on('throttled', (e) => throttled.push(e.direction));
    // The bucket lets a burst through; the rest queue at 10 IOPS.
    const reads = Array.from({ length: 5 }, (_, i) => drive.read(i * 512, 512));
    const controller = new AbortController();
    const reason = new Error('the user went away');
    const late = drive.read(0, 512, { signal: controller.signal });
    controller.abort(reason);
    const e = await late.catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'ECANCELED' });
    expect((e as BlockError).cause).toBe(reason);
    await Promise.all(reads);
    expect(throttled).toContain('read');
    const aborted = new AbortController();
    aborted.abort(reason);
    await expect(drive.read(0, 512, { signal: aborted.signal })).rejects.toMatchObject({ code: 'ECANCELED', cause: reason });
    await drive.close();
  });

  it('dirty bitmaps, block status and a readable stream work across the thread as on a Drive', async () => {
    const drive = await layer.openDrive({ driver: 'memory', size: '16M' });
    expect(await drive.addDirtyBitmap('b0', { granularity: 65536 })).toMatchObject({ name: 'b0', granularity: 65536, count: 0 });
    await drive.write(65536 * 3 + 100, pattern(100, 1));
    await drive.write(65536 * 200, pattern(65536 * 2, 2));
    const extents = [];
    for await (const e of drive.dirtyExtents('b0')) extents.push(e);
    expect(extents).toEqual([
      { offset: 65536 * 3, length: 65536 },
      { offset: 65536 * 200, length: 65536 * 2 },
    ]);
    expect(await drive.dirtyBitmaps()).toMatchObject([{ name: 'b0', count: 3 * 65536 }]);
    await expect(drive.addDirtyBitmap('b0')).rejects.toMatchObject({ name: 'BlockError', code: 'EEXIST' });
    await drive.clearDirtyBitmap('b0');
    expect(await drive.dirtyBitmaps()).toMatchObject([{ name: 'b0', count: 0 }]);
    await drive.removeDirtyBitmap('b0');
    expect(await drive.dirtyBitmaps()).toEqual([]);
    const map = await drive.blockStatusMap();
    const walked = [];
    for await (const e of drive.blockStatusExtents()) walked.push(e);
    expect(walked).toEqual(map);
    expect(map.reduce((n, e) => n + e.length, 0)).toBe(drive.length);
    const chunks: Uint8Array[] = [];
    for await (const c of drive.readableStream({ start: 65536 * 200, end: 65536 * 202 - 1 })) chunks.push(c);
    expect(Buffer.concat(chunks)).toEqual(Buffer.from(pattern(65536 * 2, 2)));
    await drive.close();
  });

  it('a resize in the worker is seen in the main thread', async () => {
    const drive = await layer.openDrive({ driver: 'memory', size: '1M' });
    const sizes: number[] = [];
    drive.on('resize', (e) => sizes.push(e.newSize));
    await drive.resize(2 * 1024 * 1024);
    expect(drive.length).toBe(2 * 1024 * 1024);
    expect(sizes).toEqual([2 * 1024 * 1024]);
    await drive.close();
  });

  it('a worker that dies fails the calls in flight and every later call with EIO', async () => {
    const w = startWorker();
    const l = connectWorkerLayer(w);
    const drive = await l.openDrive({ driver: 'null', size: '1G' });
    await drive.setLimits({ iopsTotal: 1 });
    const reads = Array.from({ length: 4 }, (_, i) => drive.read(i * 512, 512).then(() => 'ok', (e: unknown) => e));
    await new Promise((r) => setTimeout(r, 50));
    await w.terminate();
    const outcomes = await Promise.all(reads);
    const failed = outcomes.filter((o) => o !== 'ok');
    expect(failed.length).toBeGreaterThan(0);
    for (const f of failed) expect(f).toMatchObject({ name: 'BlockError', code: 'EIO', message: expect.stringMatching(/worker exited/) });
    await expect(drive.read(0, 512)).rejects.toMatchObject({ code: 'EIO' });
  });
});

const haveBios = fs.existsSync(BIOS) && fs.existsSync(VGA_BIOS) && haveProgram('nasm');
if (!haveBios && process.env.CI === 'true') throw new Error('seabios or nasm missing in CI: .ci/run must install them');

describe.skipIf(!haveBios)('v86 on a drive whose storage lives in a worker', () => {
  it('boots SeaBIOS and the guest boot sector from a raw image in the worker; its write lands in the file', async () => {
    const image = path.join(dir, 'boot.raw');
    fs.writeFileSync(image, buildDisk(await assembleBootSector(dir)));
    const drive = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: image } });
    const boot = await bootV86(toV86Disk(drive));
    expect(boot.serial).toContain(expectedSumLine());
    expect(boot.serial).toContain('WRITE OK');
    await drive.flush();
    await drive.close();
    const written = fs.readFileSync(image).subarray(WRITE_LBA * 512, (WRITE_LBA + 1) * 512);
    expect(new Uint8Array(written)).toEqual(guestSector());
  }, 90_000);
});
