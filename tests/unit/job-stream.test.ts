// block-stream on a three-layer qcow2 chain over memory nodes (VirtualClock): the top image
// takes what lies below it down to the base, then reads from the base directly (header and open
// graph); the guest view never changes; speed, pause and cancel.
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../src/clock.js';
import { BlockLayer } from '../../src/layer.js';
import type { JobStatus } from '../../src/jobs/job.js';
import { readAll, threeLayerChain } from '../helpers/memory-chain.js';

const MiB = 1 << 20;
/** Byte-for-byte equality (toEqual walks megabytes element by element). */
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));

describe('stream job', () => {
  it('with a base node: top takes mid, reads from base after, the view is unchanged, mid is out of the chain', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    const { base, mid, top } = await threeLayerChain(layer);
    const drive = layer.attachDrive(top, { id: 'disk0' });
    const before = await readAll(top);
    const statuses: JobStatus[] = [];
    const job = await layer.startJob({ type: 'stream', device: 'disk0', baseNode: 'base', backingFile: 'base.qcow2' });
    expect(job.id).toBe('disk0');
    job.on('status-change', (s) => statuses.push(s));
    await job.wait();
    expect(statuses).toEqual(['waiting', 'pending', 'concluded', 'null']);
    expect(job.progress).toEqual({ current: 4 * MiB, total: 4 * MiB });
    expect(top.child('backing')).toBe(base);
    expect(top.info().backingFile).toBe('base.qcow2');
    expect(top.info().backingFormat).toBe('qcow2');
    expect(same(await readAll(top), before)).toBe(true);
    // mid's data and zeroes now live in top: base's bytes under them no longer show.
    const map = await top.blockStatusMap();
    const own = map.filter((e) => e.depth === 0);
    expect(own.reduce((n, e) => n + e.length, 0)).toBe(1.5 * MiB + MiB / 4);
    expect(own[0].offset).toBe(MiB);
    expect(own.at(-1)).toMatchObject({ offset: 3 * MiB, length: MiB / 4, zero: true });
    expect(mid.refCount).toBe(1); // only the layer holds it now
    await drive.close();
    await layer.close();
  });

  it('without a base: top stands alone with the whole view, no backing file in its header', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    const { top } = await threeLayerChain(layer);
    const before = await readAll(top);
    const job = await layer.startJob({ type: 'stream', device: 'top', jobId: 's0' });
    await job.wait();
    expect(top.child('backing')).toBeUndefined();
    expect(top.info().backingFile).toBeUndefined();
    expect(same(await readAll(top), before)).toBe(true);
    await layer.close();
  });

  it("with 'base' by file name, the header names the base's file; nothing to stream leaves progress 0", async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    const { mid, top } = await threeLayerChain(layer);
    // Every image here sits on a memory node: the first below top with that file name is mid.
    const job = await layer.startJob({ type: 'stream', device: 'top', jobId: 's1', base: 'memory://' });
    await job.wait();
    // Nothing lies between: nothing streamed, but the header is rewritten all the same (QEMU stream_prepare).
    expect(job.progress).toEqual({ current: 0, total: 0 });
    expect(top.child('backing')).toBe(mid);
    expect(top.info().backingFile).toBe('memory://');
    await layer.close();
  });

  it("refuses arguments as QEMU's qmp_block_stream does", async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    await threeLayerChain(layer);
    const refuse = (spec: object) => expect(layer.startJob({ type: 'stream', device: 'top', jobId: 'x', ...spec } as never)).rejects;
    await refuse({ base: 'a', baseNode: 'base' }).toThrow("'base' and 'base-node' cannot be specified at the same time");
    await refuse({ base: 'a', bottom: 'mid' }).toThrow("'base' and 'bottom' cannot be specified at the same time");
    await refuse({ bottom: 'mid', baseNode: 'base' }).toThrow("'bottom' and 'base-node' cannot be specified at the same time");
    await refuse({ base: 'nowhere.qcow2' }).toThrow("Can't find 'nowhere.qcow2' in the backing chain");
    await refuse({ baseNode: 'top' }).toThrow("Node 'top' is not a backing image of 'top'");
    await refuse({ baseNode: 'nope' }).toThrow("Cannot find device='' nor node-name='nope'");
    await refuse({ backingFile: 'b' }).toThrow('backing file specified, but streaming the entire chain');
    await refuse({ device: 'nope' }).toThrow("Cannot find device='nope' nor node-name='nope'");
    await refuse({ jobId: '' }).toThrow("Invalid job ID ''");
    await refuse({ speed: -1 }).toThrow("Parameter 'speed' expects a non-negative value");
    await layer.close();
  });

  it('a second job on the same nodes is refused while the first runs; cancel leaves the chain as it was', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const { mid, top } = await threeLayerChain(layer);
    const before = await readAll(top);
    const job = await layer.startJob({ type: 'stream', device: 'top', jobId: 's', speed: MiB });
    await expect(layer.startJob({ type: 'stream', device: 'top', jobId: 't' })).rejects.toThrow("Node 'top' is busy: block device is in use by block job: stream");
    await clock.advance(500);
    job.cancel();
    await job.whenConcluded();
    expect(job.error).toBe('Operation canceled');
    expect(top.child('backing')).toBe(mid);
    expect(same(await readAll(top), before)).toBe(true);
    await layer.close();
  });

  it('speed: 10 MiB of base data streamed at 1 MiB/s takes 10 virtual seconds (±2 %)', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const { memoryQcow2, fill } = await import('../helpers/memory-chain.js');
    const base = await memoryQcow2(layer, 'b', 16 * MiB);
    await fill(base, 0, 10 * MiB, 0x5a);
    await memoryQcow2(layer, 't', 16 * MiB, base);
    const job = await layer.startJob({ type: 'stream', device: 't', jobId: 'fast', speed: MiB });
    let done = false;
    void job.wait().then(() => (done = true));
    const start = clock.now();
    while (!done) await clock.advance(10);
    const seconds = (clock.now() - start) / 1e9;
    expect(seconds).toBeGreaterThan(9.8);
    expect(seconds).toBeLessThan(10.2);
    await layer.close();
  });
});

describe('stream job with guest writes meanwhile', () => {
  it('never puts older data over a write the guest made while the piece was copied', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const { top } = await threeLayerChain(layer);
    const drive = layer.attachDrive(top, { id: 'disk0' });
    const job = await layer.startJob({ type: 'stream', device: 'disk0', speed: 512 * 1024 });
    // Writes while the job walks the disk at 512 KiB/s: into ranges still to copy, being copied and copied.
    const writes: [number, number][] = [];
    for (let i = 0; i < 40; i++) {
      const offset = ((i * 97) % 64) * 65536 + 4096;
      writes.push([offset, 0x90 + (i % 16)]);
      await drive.write(offset, new Uint8Array(8192).fill(0x90 + (i % 16)));
      await clock.advance(100);
    }
    const expected = await readAll(top);
    let done = false;
    void job.wait().then(() => (done = true));
    for (let t = 0; !done && t < 20_000; t += 10) await clock.advance(10);
    await job.wait();
    expect(top.child('backing')).toBeUndefined();
    expect(same(await readAll(top), expected)).toBe(true);
    expect(top.bitmaps.all()).toEqual([]);
    await drive.close();
    await layer.close();
  });
});

describe('stream job racing guest writes', () => {
  it('writes in flight while pieces are read and written all survive', async () => {
    const layer = new BlockLayer({ clock: new VirtualClock() });
    const { top } = await threeLayerChain(layer);
    const drive = layer.attachDrive(top, { id: 'disk0' });
    const job = await layer.startJob({ type: 'stream', device: 'disk0' });
    const pending: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) {
      const offset = ((i * 37) % 64) * 65536 + ((i * 4096) % 61440);
      pending.push(drive.write(offset, new Uint8Array(4096).fill(1 + (i % 250))));
      await Promise.resolve();
      if (i % 4 === 0) await new Promise((r) => setImmediate(r));
    }
    await Promise.all(pending);
    await job.wait();
    // The model: the chain's view with the writes in their order.
    const model = new Uint8Array(4 * MiB);
    const fresh = new BlockLayer({ clock: new VirtualClock() });
    const chain = await threeLayerChain(fresh);
    model.set(await readAll(chain.top));
    for (let i = 0; i < 200; i++) model.fill(1 + (i % 250), ((i * 37) % 64) * 65536 + ((i * 4096) % 61440), ((i * 37) % 64) * 65536 + ((i * 4096) % 61440) + 4096);
    expect(same(await readAll(top), model)).toBe(true);
    await fresh.close();
    await drive.close();
    await layer.close();
  });
});
