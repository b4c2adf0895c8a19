// The mirror job (QEMU block/mirror.c) on memory nodes and a VirtualClock: it converges to READY,
// copies writes made meanwhile, pivots the drives on complete, cancels softly or for real, pauses,
// keeps its speed, and applies its target error policies (blkdebug).
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../src/clock.js';
import type { Drive } from '../../src/drive.js';
import { isBlockError } from '../../src/errors.js';
import type { Job, JobStatus } from '../../src/jobs/job.js';
import { BlockLayer } from '../../src/layer.js';
import type { BlockNode } from '../../src/node/node.js';

const MiB = 1 << 20;

function record(job: Job): { statuses: JobStatus[]; events: string[] } {
  const statuses: JobStatus[] = [job.status];
  const events: string[] = [];
  job.on('status-change', (s) => statuses.push(s));
  job.on('ready', () => events.push('ready'));
  job.on('cancelled', () => events.push('cancelled'));
  job.on('completed', (err) => events.push(err === undefined ? 'completed' : `completed: ${err}`));
  job.on('io-error', (e) => events.push(`io-error ${e.operation} ${e.action}`));
  return { statuses, events };
}

/** A pattern that differs per 512-byte sector and per seed. */
function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = ((i >> 9) * 31 + seed * 7 + (i & 0xff)) & 0xff;
  return out;
}

async function contents(node: BlockNode): Promise<Uint8Array> {
  const out = new Uint8Array(node.length);
  await node.read(0, out);
  return out;
}

/** Whether two nodes read the same (a byte compare: deep equality of megabytes is slow). */
async function sameContents(a: BlockNode, b: BlockNode): Promise<boolean> {
  return Buffer.compare(await contents(a), await contents(b)) === 0;
}

/** Advances the clock in small steps until `done()` holds (at most `limitMs` of virtual time). */
async function until(clock: VirtualClock, done: () => boolean, limitMs = 60_000): Promise<void> {
  for (let t = 0; !done(); t += 10) {
    if (t > limitMs) throw new Error('condition not reached in virtual time');
    await clock.advance(10);
  }
}

interface Setup {
  clock: VirtualClock;
  layer: BlockLayer;
  drive: Drive;
  source: BlockNode;
  target: BlockNode;
}

/** A drive `d0` on a memory source `src` holding data in its first half, and a memory target `tgt` of the same size. */
async function setup(size = 4 * MiB, target: Record<string, unknown> = { driver: 'memory', size }): Promise<Setup> {
  const clock = new VirtualClock();
  const layer = new BlockLayer({ clock });
  const source = await layer.addNode({ driver: 'memory', size, nodeName: 'src' });
  await source.write(0, pattern(size / 2, 1));
  const tgt = await layer.addNode({ ...target, nodeName: 'tgt' } as never);
  const drive = layer.attachDrive(source, { id: 'd0' });
  return { clock, layer, drive, source, target: tgt };
}

describe('mirror job', () => {
  it('sync=full converges to READY with len = offset = the disk, and complete pivots the drive to the target', async () => {
    const { clock, layer, drive, source, target } = await setup();
    const job = await layer.startJob({ type: 'mirror', device: 'd0', target: 'tgt', sync: 'full' });
    expect(job.id).toBe('d0');
    const seen = record(job);
    await until(clock, () => job.status === 'ready');
    expect(job.progress).toEqual({ current: 4 * MiB, total: 4 * MiB });
    expect(await sameContents(target, source)).toBe(true);
    job.complete();
    await until(clock, () => job.status === 'null');
    await job.wait();
    expect(seen.statuses).toEqual(['running', 'ready', 'waiting', 'pending', 'concluded', 'null']);
    expect(seen.events).toEqual(['ready', 'completed']);
    expect(drive.node).toBe(target);
    // The drive now writes to the target; the source keeps what it had.
    await drive.write(0, new Uint8Array(512).fill(0xee));
    expect((await contents(target))[0]).toBe(0xee);
    expect((await contents(source))[0]).not.toBe(0xee);
    expect(source.bitmaps.active).toBe(false);
    await layer.close();
  });

  it('copies the writes made while it runs and while READY: after the pivot the target holds them all', async () => {
    const { clock, layer, drive, target } = await setup(8 * MiB);
    const job = await layer.startJob({ type: 'mirror', device: 'd0', target: 'tgt', sync: 'full', speed: 4 * MiB, bufSize: 256 * 1024 });
    const expected = await contents(drive.node);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 40; i++) {
      await clock.advance(37);
      const offset = ((i * 7919) % 16000) * 512;
      const data = pattern(4096, 100 + i);
      expected.set(data, offset);
      writes.push(drive.write(offset, data));
    }
    await Promise.all(writes);
    await until(clock, () => job.status === 'ready');
    // And while READY.
    const late = pattern(65536, 9);
    expected.set(late, 3 * MiB);
    await drive.write(3 * MiB, late);
    job.complete();
    await until(clock, () => job.status === 'null');
    await job.wait();
    expect(drive.node).toBe(target);
    expect(Buffer.compare(await contents(target), expected)).toBe(0);
    await layer.close();
  });

  it('a soft cancel while READY completes without the pivot; a force cancel before READY leaves the source untouched', async () => {
    const soft = await setup();
    const job = await soft.layer.startJob({ type: 'mirror', device: 'src', target: 'tgt', sync: 'full', jobId: 'm' });
    const seen = record(job);
    await until(soft.clock, () => job.status === 'ready');
    job.cancel(false);
    await until(soft.clock, () => job.status === 'null');
    expect(seen.events).toEqual(['ready', 'completed']);
    expect(soft.drive.node).toBe(soft.source);
    expect(await sameContents(soft.target, soft.source)).toBe(true);
    await soft.layer.close();

    const hard = await setup();
    const before = await contents(hard.source);
    const slow = await hard.layer.startJob({ type: 'mirror', device: 'd0', target: 'tgt', sync: 'full', speed: MiB, bufSize: 65536 });
    const seen2 = record(slow);
    await hard.clock.advance(500);
    expect(slow.progress.current).toBeGreaterThan(0);
    expect(slow.progress.current).toBeLessThan(4 * MiB);
    slow.cancel(false); // before READY: a real cancel
    await until(hard.clock, () => slow.status === 'null');
    expect(seen2.events).toEqual(['cancelled']);
    expect(seen2.statuses).toEqual(['running', 'aborting', 'concluded', 'null']);
    expect(hard.drive.node).toBe(hard.source);
    expect(Buffer.compare(await contents(hard.source), before)).toBe(0);
    expect(hard.source.bitmaps.active).toBe(false);
    await hard.layer.close();
  });

  it('a force cancel while READY is a cancel (no pivot)', async () => {
    const { clock, layer, drive, source } = await setup();
    const job = await layer.startJob({ type: 'mirror', device: 'd0', target: 'tgt', sync: 'full' });
    const seen = record(job);
    await until(clock, () => job.status === 'ready');
    job.cancel(true);
    await until(clock, () => job.status === 'null');
    expect(seen.events).toEqual(['ready', 'cancelled']);
    expect(drive.node).toBe(source);
    await layer.close();
  });

  it('pause really pauses (no progress, nothing in flight), resume goes on', async () => {
    const { clock, layer } = await setup();
    const job = await layer.startJob({ type: 'mirror', device: 'd0', target: 'tgt', sync: 'full', speed: MiB, bufSize: 65536 });
    await clock.advance(1000);
    job.pause();
    await clock.advance(200);
    expect(job.status).toBe('paused');
    const at = job.progress.current;
    await clock.advance(5000);
    expect(job.progress.current).toBe(at);
    job.resume();
    await clock.advance(1000);
    expect(job.progress.current).toBeGreaterThan(at);
    job.cancel(true);
    await until(clock, () => job.status === 'null');
    await layer.close();
  });

  it('keeps its speed within 2 % over 10 virtual seconds', async () => {
    const { clock, layer, source } = await setup(32 * MiB);
    // Data throughout: write-zeroes of zero ranges are not counted against the speed (as in QEMU).
    await source.write(16 * MiB, pattern(16 * MiB, 2));
    const speed = 2 * MiB;
    const job = await layer.startJob({ type: 'mirror', device: 'd0', target: 'tgt', sync: 'full', speed, bufSize: 65536 });
    await clock.advance(10_000 - 1);
    const moved = job.progress.current;
    expect(Math.abs(moved - 10 * speed) / (10 * speed)).toBeLessThan(0.02);
    job.cancel(true);
    await until(clock, () => job.status === 'null');
    await layer.close();
  });

  it('sync=none copies only what is written after the start', async () => {
    const { clock, layer, drive, target } = await setup();
    const job = await layer.startJob({ type: 'mirror', device: 'd0', target: 'tgt', sync: 'none' });
    await drive.write(MiB, pattern(8192, 3));
    await until(clock, () => job.status === 'ready');
    job.complete();
    await until(clock, () => job.status === 'null');
    const t = await contents(target);
    expect(t.subarray(MiB, MiB + 8192)).toEqual(pattern(8192, 3));
    expect(t.subarray(0, 4096).every((b) => b === 0)).toBe(true);
    await layer.close();
  });

  describe('on-target-error (blkdebug target)', () => {
    const faulty = (size: number) => ({ driver: 'blkdebug', rules: [{ event: 'write', offset: MiB + 100, once: true }], file: { driver: 'memory', size } });

    it('report: the job fails with the error (BLOCK_JOB_COMPLETED error), nothing pivoted', async () => {
      const { clock, layer, drive, source } = await setup(4 * MiB, { ...faulty(4 * MiB), rules: [{ event: 'write', offset: MiB + 100 }] });
      const job = await layer.startJob({ type: 'mirror', device: 'd0', target: 'tgt', sync: 'full' });
      const seen = record(job);
      await until(clock, () => job.status === 'null');
      await expect(job.wait()).rejects.toSatisfy((e: unknown) => isBlockError(e, 'EIO'));
      expect(seen.events).toEqual(['io-error write report', 'completed: Input/output error']);
      expect(drive.node).toBe(source);
      await layer.close();
    });

    it('ignore: the failed chunk is copied again and the mirror converges', async () => {
      const { clock, layer, source, target } = await setup(4 * MiB, faulty(4 * MiB));
      const job = await layer.startJob({ type: 'mirror', device: 'd0', target: 'tgt', sync: 'full', onTargetError: 'ignore' });
      const seen = record(job);
      await until(clock, () => job.status === 'ready');
      expect(seen.events).toEqual(['io-error write ignore', 'ready']);
      expect(await sameContents(target, source)).toBe(true);
      job.complete();
      await until(clock, () => job.status === 'null');
      await layer.close();
    });

    it('stop: the job pauses with io-status failed until resumed, then converges', async () => {
      const { clock, layer, source, target } = await setup(4 * MiB, { ...faulty(4 * MiB), rules: [{ event: 'write', offset: MiB + 100 }] });
      const job = await layer.startJob({ type: 'mirror', device: 'd0', target: 'tgt', sync: 'full', onTargetError: 'stop' });
      const seen = record(job);
      await until(clock, () => job.status === 'paused');
      expect(job.ioStatus).toBe('failed');
      expect(job.userPaused).toBe(true);
      expect(seen.events).toEqual(['io-error write stop']);
      (target.info().injector as { clear(): void }).clear();
      job.resume();
      await until(clock, () => job.status === 'ready');
      expect(await sameContents(target, source)).toBe(true);
      job.cancel(true);
      await until(clock, () => job.status === 'null');
      await layer.close();
    });
  });

  it('refuses bad arguments with QEMU messages, and a target of another size fails the job', async () => {
    const { clock, layer } = await setup();
    await layer.addNode({ driver: 'memory', size: 2 * MiB, nodeName: 'small' });
    const start = (extra: Record<string, unknown>) => layer.startJob({ type: 'mirror', device: 'd0', target: 'tgt', sync: 'full', ...extra } as never);
    await expect(start({ granularity: 1000 })).rejects.toThrow("Parameter 'granularity' expects a power of 2");
    await expect(start({ granularity: 256 })).rejects.toThrow("Parameter 'granularity' expects a value in range [512B, 64MB]");
    await expect(start({ bufSize: -1 })).rejects.toThrow("Invalid parameter 'buf-size'");
    await expect(start({ target: 'src' })).rejects.toThrow("Can't mirror node into itself");
    await expect(start({ target: 'nope' })).rejects.toThrow("Cannot find device='nope' nor node-name='nope'");
    await expect(start({ sync: 'incremental' })).rejects.toThrow("Sync mode 'incremental' not supported");
    await expect(start({ device: 'small' })).rejects.toThrow("Invalid job ID ''");
    const job = await start({ target: 'small' });
    const seen = record(job);
    await until(clock, () => job.status === 'null');
    expect(seen.events).toEqual(['completed: Source and target image have different sizes']);
    expect(layer.findNode('src')!.bitmaps.active).toBe(false);
    await layer.close();
  });
});
