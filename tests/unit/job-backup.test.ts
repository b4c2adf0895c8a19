// The backup job on memory nodes and a virtual clock: the target is the source as it was at the
// job's start whatever the guest writes meanwhile (a property), full/top/none/incremental, the
// bitmap modes, speed, cancel, error policies with a blkdebug target, and QEMU's argument errors.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../src/clock.js';
import { BlockLayer } from '../../src/index.js';
import type { Job, JobStatus } from '../../src/jobs/job.js';
import type { BlockNode } from '../../src/node/node.js';
import { patternBytes } from '../helpers/pattern-bytes.js';

const MiB = 1 << 20;
const CLUSTER = 64 * 1024;

async function setup(size = MiB, target: Record<string, unknown> = { driver: 'memory', size }) {
  const clock = new VirtualClock();
  const layer = new BlockLayer({ clock });
  const src = await layer.addNode({ driver: 'memory', size, nodeName: 'src' });
  const tgt = await layer.addNode({ ...target, nodeName: 'tgt' } as never);
  return { clock, layer, src, tgt };
}

async function content(node: BlockNode): Promise<Uint8Array> {
  const out = new Uint8Array(node.length);
  await node.read(0, out);
  return out;
}

/** The first offset where two buffers differ, or -1 (toEqual on megabytes is far too slow). */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  if (Buffer.compare(a, b) === 0) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

function statuses(layer: BlockLayer): JobStatus[] {
  const seen: JobStatus[] = [];
  layer.jobs.on('created', (j) => {
    seen.push(j.status);
    j.on('status-change', (s) => seen.push(s));
  });
  return seen;
}

/** Advances the clock until the job has concluded. */
async function runOut(clock: VirtualClock, job: Job, stepMs = 100, limitMs = 60_000): Promise<void> {
  let done = false;
  void job.whenConcluded().then(() => (done = true));
  for (let t = 0; !done && t < limitMs; t += stepMs) await clock.advance(stepMs);
  if (!done) throw new Error(`job ${job.id} still ${job.status} after ${limitMs} ms: ${JSON.stringify(job.progress)}`);
}

describe('backup job', () => {
  it('sync=full copies every byte and runs through QEMU statuses', async () => {
    const { layer, src, tgt } = await setup();
    const seen = statuses(layer);
    await src.write(0, patternBytes(1, MiB));
    await src.writeZeroes(256 * 1024, 128 * 1024);
    const job = await layer.startJob({ type: 'backup', jobId: 'j', device: 'src', target: 'tgt', sync: 'full' });
    await job.wait();
    expect(firstDifference(await content(tgt), await content(src))).toBe(-1);
    expect(job.progress).toEqual({ current: MiB, total: MiB });
    expect(seen).toEqual(['created', 'running', 'waiting', 'pending', 'concluded', 'null']);
    // The hook is gone: another backup may hook the node now, and references are back.
    expect(src.refCount).toBe(1);
    expect(tgt.refCount).toBe(1);
    await layer.close();
  });

  it('the target is the source at the start even when the guest rewrites every cluster during the job (property)', async () => {
    const size = 1 * MiB;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ at: fc.integer({ min: 0, max: size - 1 }), len: fc.integer({ min: 1, max: 3 * CLUSTER }), afterMs: fc.integer({ min: 0, max: 900 }), kind: fc.constantFrom('write', 'zero', 'discard') }), {
          minLength: 1,
          maxLength: 25,
        }),
        fc.integer({ min: 1, max: 1000 }),
        async (writes, seed) => {
          const { clock, layer, src, tgt } = await setup(size);
          await src.write(0, patternBytes(seed, size));
          const before = await content(src);
          const expected = before.slice();
          // One cluster per copy at 512 KiB/s: the sweep takes two seconds, so the writes land in the middle of it.
          const job = await layer.startJob({ type: 'backup', jobId: 'j', device: 'src', target: 'tgt', sync: 'full', speed: MiB / 2, perf: { maxChunk: CLUSTER } });
          // Each guest write is awaited: overlapping writes in flight together may land in any order.
          let t = 0;
          const sorted = [...writes].sort((a, b) => a.afterMs - b.afterMs);
          for (const [i, w] of sorted.entries()) {
            await clock.advance(w.afterMs - t);
            t = w.afterMs;
            const len = Math.min(w.len, size - w.at);
            if (w.kind === 'write') {
              const data = patternBytes(seed + i + 7, len);
              expected.set(data, w.at);
              await src.write(w.at, data);
            } else if (w.kind === 'zero') {
              expected.fill(0, w.at, w.at + len);
              await src.writeZeroes(w.at, len);
            } else {
              await src.discard(w.at, len);
            }
          }
          // The last writes go over every cluster.
          for (let off = 0; off < size; off += CLUSTER) {
            const data = patternBytes(seed + off + 3, CLUSTER);
            expected.set(data, off);
            await src.write(off, data);
          }
          await runOut(clock, job);
          await job.wait();
          expect(firstDifference(await content(tgt), before)).toBe(-1);
          // The last writes covered every cluster: the source holds exactly what the guest wrote.
          const after = await content(src);
          expect(firstDifference(after, expected)).toBe(-1);
          await layer.close();
        },
      ),
      { numRuns: 12 },
    );
  });

  it('incremental cycle: full backup + bitmap, writes, incremental = exactly the changed clusters, bitmap cleared, repeated', async () => {
    const { layer, src, tgt } = await setup(2 * MiB);
    await src.write(0, patternBytes(5, 2 * MiB));
    // The bitmap and the full backup start together (as in a transaction: no write between).
    src.bitmaps.add('b0', { granularity: CLUSTER });
    const full = await layer.startJob({ type: 'backup', jobId: 'full', device: 'src', target: 'tgt', sync: 'full' });
    await full.wait();
    expect(firstDifference(await content(tgt), await content(src))).toBe(-1);
    for (let round = 0; round < 3; round++) {
      const changed = [round * 3 * CLUSTER + 100, 17 * CLUSTER + round, 30 * CLUSTER - 1];
      for (const at of changed) await src.write(at, patternBytes(at + round, 10));
      const dirtyClusters = new Set(changed.flatMap((at) => [Math.floor(at / CLUSTER), Math.floor((at + 9) / CLUSTER)]));
      expect(src.bitmaps.get('b0').count).toBe(dirtyClusters.size * CLUSTER);
      const inc = await layer.addNode({ driver: 'memory', size: 2 * MiB, nodeName: `inc${round}` });
      const job = await layer.startJob({ type: 'backup', jobId: `inc${round}`, device: 'src', target: `inc${round}`, sync: 'incremental', bitmap: 'b0' });
      expect(src.bitmaps.get('b0').busy).toBe(true);
      await job.wait();
      expect(job.progress.total).toBe(dirtyClusters.size * CLUSTER);
      const got = await content(inc);
      const now = await content(src);
      for (let c = 0; c < 32; c++) {
        const slice = got.subarray(c * CLUSTER, (c + 1) * CLUSTER);
        if (dirtyClusters.has(c)) expect(firstDifference(slice, now.subarray(c * CLUSTER, (c + 1) * CLUSTER))).toBe(-1);
        else expect(slice.every((b) => b === 0)).toBe(true);
      }
      expect(src.bitmaps.get('b0').count).toBe(0);
      expect(src.bitmaps.get('b0').busy).toBe(false);
    }
    await layer.close();
  });

  it('a failed incremental backup loses no bit; writes during a successful one stay dirty', async () => {
    const { clock, layer, src } = await setup(MiB);
    src.bitmaps.add('b0', { granularity: CLUSTER });
    await src.write(0, patternBytes(1, CLUSTER));
    await src.write(5 * CLUSTER, patternBytes(2, CLUSTER));
    await layer.addNode({ driver: 'blkdebug', nodeName: 'bad', rules: [{ event: 'write' }], file: { driver: 'memory', size: MiB } });
    const failed = await layer.startJob({ type: 'backup', jobId: 'f', device: 'src', target: 'bad', sync: 'incremental', bitmap: 'b0' });
    await expect(failed.wait()).rejects.toMatchObject({ code: 'EIO' });
    expect(failed.error).toBe('Input/output error');
    expect(src.bitmaps.get('b0').count).toBe(2 * CLUSTER);
    // Success, with a guest write while the job runs: only that write stays dirty.
    const job = await layer.startJob({ type: 'backup', jobId: 'ok', device: 'src', target: 'tgt', sync: 'incremental', bitmap: 'b0', speed: CLUSTER * 10 });
    await clock.advance(50);
    await src.write(9 * CLUSTER, patternBytes(3, 100));
    await runOut(clock, job);
    await job.wait();
    expect(src.bitmaps.get('b0').count).toBe(CLUSTER);
    expect(src.bitmaps.get('b0').isDirty(9 * CLUSTER)).toBe(true);
    await layer.close();
  });

  it("bitmap-mode 'always' after a failure keeps what was not copied and what was written; 'never' leaves the bitmap to grow", async () => {
    const { layer, src } = await setup(MiB);
    src.bitmaps.add('b0', { granularity: CLUSTER });
    await src.write(0, patternBytes(1, 2 * CLUSTER));
    await layer.addNode({ driver: 'blkdebug', nodeName: 'bad', rules: [{ event: 'write', offset: CLUSTER }], file: { driver: 'memory', size: MiB } });
    const job = await layer.startJob({ type: 'backup', jobId: 'a', device: 'src', target: 'bad', sync: 'bitmap', bitmap: 'b0', bitmapMode: 'always', perf: { maxChunk: CLUSTER } });
    await expect(job.wait()).rejects.toMatchObject({ code: 'EIO' });
    // Cluster 0 was copied; cluster 1 failed and stays dirty.
    expect(src.bitmaps.get('b0').isDirty(0)).toBe(false);
    expect(src.bitmaps.get('b0').isDirty(CLUSTER)).toBe(true);
    const never = await layer.startJob({ type: 'backup', jobId: 'n', device: 'src', target: 'tgt', sync: 'bitmap', bitmap: 'b0', bitmapMode: 'never' });
    await never.wait();
    expect(src.bitmaps.get('b0').count).toBe(CLUSTER);
    await layer.close();
  });

  it('speed holds within 2 % over 10 virtual seconds', async () => {
    const speed = MiB;
    const { clock, layer } = await setup(10 * MiB);
    const job = await layer.startJob({ type: 'backup', jobId: 'j', device: 'src', target: 'tgt', sync: 'full', speed });
    const start = clock.now();
    let end = 0;
    void job.whenConcluded().then(() => (end = clock.now()));
    await runOut(clock, job);
    const seconds = (end - start) / 1e9;
    expect(seconds).toBeGreaterThan(9.8);
    expect(seconds).toBeLessThan(10.2);
    await clock.advance(0);
    await layer.close();
  });

  it('sync=none copies only what the guest overwrites and runs until cancelled; cancel leaves the target and the source as they are', async () => {
    const { clock, layer, src, tgt } = await setup(MiB);
    await src.write(0, patternBytes(4, MiB));
    const before = await content(src);
    const job = await layer.startJob({ type: 'backup', jobId: 'n', device: 'src', target: 'tgt', sync: 'none' });
    const events: string[] = [];
    job.on('cancelled', () => events.push('cancelled'));
    job.on('completed', () => events.push('completed'));
    await clock.advance(1000);
    expect(job.status).toBe('running');
    await src.write(3 * CLUSTER + 5, patternBytes(1, 10));
    await src.write(7 * CLUSTER, patternBytes(2, CLUSTER + 1));
    expect(job.progress.current).toBe(3 * CLUSTER);
    expect(job.progress.total).toBe(MiB);
    job.cancel();
    await job.whenConcluded();
    expect(events).toEqual(['cancelled']);
    const got = await content(tgt);
    for (const c of [3, 7, 8]) expect(firstDifference(got.subarray(c * CLUSTER, (c + 1) * CLUSTER), before.subarray(c * CLUSTER, (c + 1) * CLUSTER))).toBe(-1);
    expect(got.subarray(0, 3 * CLUSTER).every((b) => b === 0)).toBe(true);
    // The hook is gone: a write now is not copied.
    await src.write(0, patternBytes(3, 10));
    expect((await content(tgt)).subarray(0, 10).every((b) => b === 0)).toBe(true);
    await layer.close();
  });

  it('concurrent guest writes to one cluster wait for a single copy of it, holding the old data', async () => {
    const { layer, src, tgt } = await setup(MiB);
    await src.write(0, patternBytes(12, MiB));
    const before = await content(src);
    const job = await layer.startJob({ type: 'backup', jobId: 'n', device: 'src', target: 'tgt', sync: 'none' });
    const writes = Array.from({ length: 10 }, (_, i) => src.write(3 * CLUSTER + i * 1000, patternBytes(i, 500)));
    await Promise.all(writes);
    // Each copy adds its bytes to the progress: one cluster, copied once.
    expect(job.progress.current).toBe(CLUSTER);
    expect(firstDifference((await content(tgt)).subarray(3 * CLUSTER, 4 * CLUSTER), before.subarray(3 * CLUSTER, 4 * CLUSTER))).toBe(-1);
    job.cancel();
    await job.whenConcluded();
    await layer.close();
  });

  it('a cancelled full backup stops; the target keeps what was copied and the source is untouched', async () => {
    const { clock, layer, src, tgt } = await setup(4 * MiB);
    await src.write(0, patternBytes(8, 4 * MiB));
    const before = await content(src);
    const job = await layer.startJob({ type: 'backup', jobId: 'c', device: 'src', target: 'tgt', sync: 'full', speed: MiB });
    await clock.advance(1500);
    job.cancel();
    await runOut(clock, job);
    await expect(job.wait()).rejects.toMatchObject({ code: 'ECANCELED' });
    expect(job.progress.current).toBeGreaterThan(0);
    expect(job.progress.current).toBeLessThan(4 * MiB);
    expect(firstDifference(await content(src), before)).toBe(-1);
    const got = await content(tgt);
    expect(firstDifference(got.subarray(0, job.progress.current), before.subarray(0, job.progress.current))).toBe(-1);
    await layer.close();
  });

  it('on-target-error: report fails the job, stop pauses it until resumed, ignore retries, enospc stops on ENOSPC only', async () => {
    for (const policy of ['report', 'stop', 'ignore', 'enospc'] as const) {
      const { clock, layer, src } = await setup(MiB);
      await src.write(0, patternBytes(6, MiB));
      const bad = await layer.addNode({
        driver: 'blkdebug',
        nodeName: 'bad',
        rules: [{ event: 'write', offset: 2 * CLUSTER, once: true, code: policy === 'enospc' ? 'ENOSPC' : 'EIO' }],
        file: { driver: 'memory', size: MiB },
      });
      const job = await layer.startJob({ type: 'backup', jobId: 'e', device: 'src', target: 'bad', sync: 'full', onTargetError: policy, perf: { maxChunk: CLUSTER } });
      const errors: string[] = [];
      job.on('io-error', (e) => errors.push(`${e.operation}:${e.action}`));
      if (policy === 'report') {
        await expect(job.wait()).rejects.toMatchObject({ code: 'EIO' });
        expect(errors).toEqual(['write:report']);
      } else {
        if (policy === 'stop' || policy === 'enospc') {
          await clock.advance(100);
          expect(job.status).toBe('paused');
          expect(job.ioStatus).toBe(policy === 'enospc' ? 'nospace' : 'failed');
          job.resume();
        }
        await runOut(clock, job);
        await job.wait();
        expect(errors).toEqual([policy === 'ignore' ? 'write:ignore' : 'write:stop']);
        expect(firstDifference(await content(bad), await content(src))).toBe(-1);
      }
      await layer.close();
    }
  });

  it('on-source-error applies to read errors', async () => {
    const { clock, layer } = await setup(MiB);
    const badsrc = await layer.addNode({ driver: 'blkdebug', nodeName: 'badsrc', rules: [{ event: 'read', offset: 0, once: true }], file: { driver: 'memory', size: MiB } });
    await badsrc.write(0, patternBytes(2, MiB));
    const job = await layer.startJob({ type: 'backup', jobId: 's', device: 'badsrc', target: 'tgt', sync: 'full', onSourceError: 'ignore', onTargetError: 'report' });
    const errors: string[] = [];
    job.on('io-error', (e) => errors.push(`${e.operation}:${e.action}`));
    await runOut(clock, job);
    await job.wait();
    expect(errors).toEqual(['read:ignore']);
    expect(firstDifference(await content(layer.findNode('tgt')!), await content(badsrc))).toBe(-1);
    await layer.close();
  });

  it('a huge max-chunk still copies through a bounded buffer', async () => {
    const { layer, src, tgt } = await setup(2 * MiB);
    await src.write(0, patternBytes(21, 2 * MiB));
    const job = await layer.startJob({ type: 'backup', jobId: 'h', device: 'src', target: 'tgt', sync: 'full', perf: { maxChunk: 2 ** 50 } });
    await job.wait();
    expect(firstDifference(await content(tgt), await content(src))).toBe(-1);
    await layer.close();
  });

  it('refuses bad arguments with QEMU messages, in its order', async () => {
    const { layer, src } = await setup(MiB);
    await layer.addNode({ driver: 'memory', size: MiB / 2, nodeName: 'small' });
    const start = (spec: Record<string, unknown>) => layer.startJob({ type: 'backup', jobId: 'x', device: 'src', target: 'tgt', sync: 'full', ...spec } as never);
    await expect(start({ sync: 'incremental' })).rejects.toThrow("must provide a valid bitmap name for 'incremental' sync mode");
    await expect(start({ sync: 'bitmap' })).rejects.toThrow("must provide a valid bitmap name for 'bitmap' sync mode");
    await expect(start({ bitmap: 'b0' })).rejects.toThrow("Bitmap 'b0' could not be found");
    src.bitmaps.add('b0');
    await expect(start({ bitmap: 'b0' })).rejects.toThrow('Bitmap sync mode must be given when providing a bitmap');
    await expect(start({ sync: 'none', bitmap: 'b0', bitmapMode: 'on-success' })).rejects.toThrow("sync mode 'none' does not produce meaningful bitmap outputs");
    await expect(start({ bitmap: 'b0', bitmapMode: 'never' })).rejects.toThrow("Bitmap sync mode 'never' has no meaningful effect when combined with sync mode 'full'");
    await expect(start({ sync: 'incremental', bitmap: 'b0', bitmapMode: 'always' })).rejects.toThrow("Bitmap sync mode must be 'on-success' when using sync mode 'incremental'");
    await expect(start({ bitmapMode: 'always' })).rejects.toThrow('Cannot specify bitmap sync mode without a bitmap');
    await expect(start({ target: 'small' })).rejects.toThrow('Source and target image have different sizes');
    await expect(start({ target: 'src' })).rejects.toThrow('Source and target cannot be the same');
    await expect(start({ device: 'nope' })).rejects.toThrow("Cannot find device='nope' nor node-name='nope'");
    await expect(start({ compress: true })).rejects.toThrow('Compression is not supported for this drive ');
    await expect(start({ perf: { maxWorkers: 0 } })).rejects.toThrow('max-workers must be between 1 and 2147483647');
    await expect(start({ perf: { maxChunk: -1 } })).rejects.toThrow('max-chunk must be zero (which means no limit) or positive');
    await expect(start({ jobId: undefined })).rejects.toThrow("Invalid job ID ''");
    await expect(start({ filterNodeName: 'src' })).rejects.toThrow("Could not create node: Duplicate nodes with node-name='src'");
    // Nothing was left behind: a backup can still start.
    const job = await start({});
    await job.wait();
    await layer.close();
  });
});
