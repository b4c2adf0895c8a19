// block-commit on a three-layer qcow2 chain over memory nodes (VirtualClock): intermediate
// commit of mid into base (top then reads from base), active commit with guest writes going on,
// READY, job-complete moving the drive to base, cancel before READY, soft cancel when READY, speed.
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../src/clock.js';
import { BlockLayer } from '../../src/layer.js';
import type { JobStatus } from '../../src/jobs/job.js';
import { fill, memoryQcow2, readAll, threeLayerChain } from '../helpers/memory-chain.js';

const MiB = 1 << 20;
/** Byte-for-byte equality (toEqual walks megabytes element by element). */
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));

/** Runs the virtual clock until `until` holds. */
async function advanceUntil(clock: VirtualClock, until: () => boolean, stepMs = 10, maxMs = 60_000): Promise<void> {
  for (let t = 0; !until() && t < maxMs; t += stepMs) await clock.advance(stepMs);
  expect(until()).toBe(true);
}

describe('commit job', () => {
  it('intermediate: mid goes into base, top reads from base after, the view is unchanged', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    const { base, mid, top } = await threeLayerChain(layer);
    const drive = layer.attachDrive(top, { id: 'disk0' });
    const before = await readAll(top);
    const midView = await readAll(mid);
    const statuses: JobStatus[] = [];
    const job = await layer.startJob({ type: 'commit', device: 'disk0', topNode: 'mid', baseNode: 'base', jobId: 'c0' });
    job.on('status-change', (s) => statuses.push(s));
    await job.wait();
    expect(statuses).toEqual(['waiting', 'pending', 'concluded', 'null']);
    expect(job.progress).toEqual({ current: 4 * MiB, total: 4 * MiB });
    expect(top.child('backing')).toBe(base);
    expect(top.info().backingFile).toBe('memory://');
    expect(top.info().backingFormat).toBe('qcow2');
    expect(same(await readAll(top), before)).toBe(true);
    // base now reads as mid did (mid's zeroes included).
    expect(same(await readAll(base), midView)).toBe(true);
    await drive.close();
    await layer.close();
  });

  it("refuses arguments as QEMU's qmp_block_commit does", async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    await threeLayerChain(layer);
    await memoryQcow2(layer, 'alone', MiB);
    const refuse = (spec: object) => expect(layer.startJob({ type: 'commit', device: 'top', jobId: 'x', ...spec } as never)).rejects;
    await refuse({ device: 'nope' }).toThrow("Device 'nope' not found");
    await refuse({ top: 'a', topNode: 'mid' }).toThrow("'top-node' and 'top' are mutually exclusive");
    await refuse({ topNode: 'alone' }).toThrow("'alone' is not in this backing file chain");
    await refuse({ top: 'nowhere' }).toThrow('Top image file nowhere not found');
    await refuse({ base: 'a', baseNode: 'base' }).toThrow("'base-node' and 'base' are mutually exclusive");
    await refuse({ topNode: 'mid', baseNode: 'top' }).toThrow("'top' is not in this backing file chain");
    await refuse({ base: 'nowhere' }).toThrow("Can't find 'nowhere' in the backing chain");
    await refuse({ topNode: 'base', baseNode: 'base' }).toThrow('cannot commit an image into itself');
    await refuse({ device: 'alone' }).toThrow('There is no backimg image');
    await refuse({ backingFile: 'b' }).toThrow("'backing-file' specified, but 'top' is the active layer");
    await refuse({ jobId: undefined }).toThrow("Invalid job ID ''");
    await layer.close();
  });

  it('active: guest writes meanwhile, READY, job-complete moves the drive to base with top’s view and the writes', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const { base, top } = await threeLayerChain(layer);
    const drive = layer.attachDrive(top, { id: 'disk0' });
    const statuses: JobStatus[] = [];
    const job = await layer.startJob({ type: 'commit', device: 'disk0', speed: MiB });
    expect(job.id).toBe('disk0');
    job.on('status-change', (s) => statuses.push(s));
    let ready = false;
    job.on('ready', () => (ready = true));
    await clock.advance(300);
    // Writes while the copy runs, inside and outside what is being copied.
    await drive.write(1.5 * MiB, new Uint8Array(4096).fill(0x66));
    await drive.write(3.75 * MiB, new Uint8Array(8192).fill(0x77));
    await advanceUntil(clock, () => ready);
    expect(job.isReady).toBe(true);
    expect(job.progress.current).toBe(job.progress.total);
    // And after READY: caught by the bitmap, copied before the pivot.
    await drive.write(0, new Uint8Array(512).fill(0x88));
    const expected = await readAll(top);
    job.complete();
    await job.wait();
    expect(statuses).toEqual(['ready', 'waiting', 'pending', 'concluded', 'null']);
    expect(drive.node).toBe(base);
    expect(same(await readAll(base), expected)).toBe(true);
    expect(top.bitmaps.all()).toEqual([]);
    await drive.close();
    await layer.close();
  });

  it('active: cancel before READY leaves the drive on top; a soft cancel when READY completes without moving it', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const { top } = await threeLayerChain(layer);
    const drive = layer.attachDrive(top, { id: 'disk0' });
    const before = await readAll(top);
    const job = await layer.startJob({ type: 'commit', device: 'disk0', speed: 256 * 1024 });
    let cancelled = false;
    job.on('cancelled', () => (cancelled = true));
    await clock.advance(500);
    expect(job.isReady).toBe(false);
    job.cancel();
    await job.whenConcluded();
    expect(cancelled).toBe(true);
    expect(drive.node).toBe(top);
    expect(same(await readAll(top), before)).toBe(true);

    const again = await layer.startJob({ type: 'commit', device: 'disk0' });
    let completed: string | undefined | null = null;
    again.on('completed', (e) => (completed = e));
    await advanceUntil(clock, () => again.isReady);
    again.cancel();
    await again.wait();
    expect(completed).toBeUndefined();
    expect(drive.node).toBe(top);
    await drive.close();
    await layer.close();
  });

  it('speed: 10 MiB committed at 1 MiB/s takes 10 virtual seconds (±2 %)', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const base = await memoryQcow2(layer, 'b', 16 * MiB);
    const mid = await memoryQcow2(layer, 'm', 16 * MiB, base);
    await fill(mid, 0, 10 * MiB, 0x5a);
    await memoryQcow2(layer, 't', 16 * MiB, mid);
    const job = await layer.startJob({ type: 'commit', device: 't', topNode: 'm', jobId: 'slow', speed: MiB });
    let done = false;
    void job.wait().then(() => (done = true));
    const start = clock.now();
    await advanceUntil(clock, () => done);
    const seconds = (clock.now() - start) / 1e9;
    expect(seconds).toBeGreaterThan(9.8);
    expect(seconds).toBeLessThan(10.2);
    await layer.close();
  });
});

describe('commit job I/O errors (blkdebug under the base)', () => {
  async function faultyChain(layer: BlockLayer) {
    const base = await memoryQcow2(layer, 'base', 4 * MiB, undefined, undefined, [{ event: 'write', after: 3, once: true }]);
    const mid = await memoryQcow2(layer, 'mid', 4 * MiB, base);
    await fill(mid, 0, 3 * MiB, 0x22);
    const top = await memoryQcow2(layer, 'top', 4 * MiB, mid);
    return { base, mid, top };
  }

  it('on-error report: the job fails with the error, the chain stays as it was', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    const { mid, top } = await faultyChain(layer);
    const job = await layer.startJob({ type: 'commit', device: 'top', topNode: 'mid', jobId: 'c' });
    const errors: string[] = [];
    job.on('io-error', (e) => errors.push(`${e.operation}:${e.action}`));
    await expect(job.wait()).rejects.toThrow();
    expect(job.error).toBe('Input/output error');
    expect(errors).toEqual(['write:report']);
    expect(top.child('backing')).toBe(mid);
    await layer.close();
  });

  it('on-error stop: the job pauses, and once resumed finishes with base holding mid’s view', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const { base, mid, top } = await faultyChain(layer);
    const view = await readAll(mid);
    const job = await layer.startJob({ type: 'commit', device: 'top', topNode: 'mid', jobId: 'c', onError: 'stop' });
    const errors: string[] = [];
    job.on('io-error', (e) => errors.push(`${e.operation}:${e.action}`));
    await advanceUntil(clock, () => job.status === 'paused');
    expect(errors).toEqual(['write:stop']);
    expect(job.ioStatus).toBe('failed');
    job.resume();
    await job.wait();
    expect(top.child('backing')).toBe(base);
    expect(same(await readAll(base), view)).toBe(true);
    await layer.close();
  });
});
