// A commit flushes its base's files while it copies (commit-writeback.ts): a flush once enough
// bytes went, one at a time, and a failed flush is never lost: it fails the job. Between the
// flushes, host files are told to start their write-out (a hint), one hint at a time.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMMIT_WRITEBACK_EVERY, EarlyWriteback, storageChildren } from '../../src/jobs/commit-writeback.js';
import { BlockLayer } from '../../src/layer.js';
import type { BlockNode } from '../../src/node/node.js';
import { openWritebackHint, type WritebackHint } from '../../src/platform/writeback.js';
import { fill, memoryQcow2, readAll, threeLayerChain } from '../helpers/memory-chain.js';

const MiB = 1 << 20;

/** A stand-in for a file node: counts its flushes, each settled by hand. */
function fakeFile() {
  const pending: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  const node = {
    flush: () =>
      new Promise<void>((resolve, reject) => {
        pending.push({ resolve, reject });
      }),
  } as unknown as BlockNode;
  return { node, pending };
}

const turn = () => new Promise((r) => setImmediate(r));

/** `p` and whether it has settled yet. */
function watched(p: Promise<unknown>): { readonly settled: boolean; done: Promise<void> } {
  const w = {
    settled: false,
    done: p.then(() => {
      w.settled = true;
    }),
  };
  return w;
}

/** A stand-in for a file's write-out hint: counts its starts, each settled by hand, and its closes. */
function fakeHint() {
  const started: (() => void)[] = [];
  let closed = 0;
  const hint: WritebackHint = {
    start: () =>
      new Promise<void>((resolve) => {
        started.push(resolve);
      }),
    close: async () => {
      closed++;
    },
  };
  return { hint, started, closed: () => closed };
}

describe('EarlyWriteback', () => {
  it('flushes once `every` bytes were written, one flush at a time', async () => {
    const f = fakeFile();
    const wb = new EarlyWriteback([f.node], 4 * MiB);
    wb.wrote(3 * MiB);
    expect(f.pending).toHaveLength(0);
    wb.wrote(MiB);
    expect(f.pending).toHaveLength(1);
    // Another 4 MiB while the first flush runs: no second flush at once.
    wb.wrote(4 * MiB);
    expect(f.pending).toHaveLength(1);
    f.pending[0]!.resolve();
    await turn();
    wb.wrote(4 * MiB);
    expect(f.pending).toHaveLength(2);
    f.pending[1]!.resolve();
    await wb.settle();
    expect(wb.failed).toBe(false);
  });

  it('of(target, every) flushes the target\'s files (not its backing chain) every `every` bytes', async () => {
    const f = fakeFile();
    const below = fakeFile();
    const storage = Object.assign(f.node, { driver: { name: 'fake' }, readOnly: false, options: {} });
    const target = {
      children: new Map<string, BlockNode>([
        ['file', storage],
        ['backing', below.node],
      ]),
    } as unknown as BlockNode;
    const wb = await EarlyWriteback.of(target, 8 * MiB);
    expect(wb.hinted).toBe(0);
    wb.wrote(4 * MiB);
    expect(f.pending).toHaveLength(0);
    wb.wrote(4 * MiB);
    expect(f.pending).toHaveLength(1);
    expect(below.pending).toHaveLength(0);
    f.pending[0]!.resolve();
    await wb.settle();
    expect(wb.failed).toBe(false);
  });

  it('keeps a failed flush and throws it from settle, once', async () => {
    const f = fakeFile();
    const wb = new EarlyWriteback([f.node], MiB);
    wb.wrote(MiB);
    const error = new Error('EIO');
    f.pending[0]!.reject(error);
    await turn();
    expect(wb.failed).toBe(true);
    await expect(wb.settle()).rejects.toBe(error);
    await expect(wb.settle()).resolves.toBeUndefined();
  });

  it('settle waits for the flush in flight', async () => {
    const f = fakeFile();
    const wb = new EarlyWriteback([f.node], MiB);
    wb.wrote(MiB);
    const s = watched(wb.settle());
    await turn();
    expect(s.settled).toBe(false);
    f.pending[0]!.resolve();
    await s.done;
    expect(s.settled).toBe(true);
  });

  it('starts a hint once `hintEvery` bytes were written, one at a time, beside the flushes', async () => {
    const f = fakeFile();
    const h = fakeHint();
    const wb = new EarlyWriteback([f.node], 4 * MiB, [h.hint], MiB);
    wb.wrote(MiB);
    expect(h.started).toHaveLength(1);
    expect(f.pending).toHaveLength(0);
    // Another MiB while the first hint is being started: none more at once.
    wb.wrote(MiB);
    expect(h.started).toHaveLength(1);
    h.started[0]!();
    await turn();
    wb.wrote(MiB);
    expect(h.started).toHaveLength(2);
    wb.wrote(MiB);
    // 4 MiB in all: the flush goes too, whatever the hints do.
    expect(f.pending).toHaveLength(1);
    h.started[1]!();
    f.pending[0]!.resolve();
    await wb.settle();
    expect(wb.failed).toBe(false);
  });

  it('settle waits for the hint being started, then closes the hints; none is started after', async () => {
    const h = fakeHint();
    const wb = new EarlyWriteback([], 4 * MiB, [h.hint], MiB);
    wb.wrote(MiB);
    const s = watched(wb.settle());
    await turn();
    expect(s.settled).toBe(false);
    expect(h.closed()).toBe(0);
    h.started[0]!();
    await s.done;
    expect(h.closed()).toBe(1);
    wb.wrote(4 * MiB);
    expect(h.started).toHaveLength(1);
    await wb.settle();
    expect(h.closed()).toBe(1);
  });

  it('a file node over a host file takes a hint; a memory node does not', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-writeback-'));
    const layer = new BlockLayer();
    try {
      const filename = path.join(dir, 'f.raw');
      fs.writeFileSync(filename, Buffer.alloc(MiB));
      const file = await layer.addNode({ driver: 'file', nodeName: 'f', filename });
      const raw = await layer.addNode({ driver: 'raw', nodeName: 'r', file });
      const onFile = await EarlyWriteback.of(raw);
      // Where sync_file_range can be called (Linux with koffi) the file takes a hint.
      const probe = await openWritebackHint(filename);
      await probe?.close();
      expect(onFile.hinted).toBe(probe === null ? 0 : 1);
      await onFile.settle();
      const { base } = await threeLayerChain(layer);
      const onMemory = await EarlyWriteback.of(base);
      expect(onMemory.hinted).toBe(0);
      await onMemory.settle();
    } finally {
      await layer.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the storage of a qcow2 is its file child, not its backing chain', async () => {
    const layer = new BlockLayer();
    const { base, mid } = await threeLayerChain(layer);
    expect(storageChildren(mid)).toEqual([mid.child('file')]);
    expect(storageChildren(mid)).not.toContain(base);
    await layer.close();
  });
});

describe('commit with early write-back', () => {
  it('an intermediate commit whose base file fails a flush mid-copy fails, the chain unchanged', async () => {
    const layer = new BlockLayer();
    const SIZE = 2.5 * COMMIT_WRITEBACK_EVERY;
    // The base's first flush fails: the early write-back's (the copy is 1.5 early flush steps).
    const base = await memoryQcow2(layer, 'base', SIZE, undefined, undefined, [{ event: 'flush', once: true, code: 'EIO' }]);
    const mid = await memoryQcow2(layer, 'mid', SIZE, base);
    await fill(mid, 0, 1.5 * COMMIT_WRITEBACK_EVERY, 0x5a);
    const top = await memoryQcow2(layer, 'top', SIZE, mid);
    const job = await layer.startJob({ type: 'commit', jobId: 'c', device: 'top', topNode: 'mid', baseNode: 'base' });
    await expect(job.wait()).rejects.toThrow(/EIO/);
    // It stopped copying once the flush failed, before the end of the disk.
    expect(job.progress.current).toBeLessThan(job.progress.total);
    expect(top.child('backing')).toBe(mid);
    await layer.close();
  });

  it('an intermediate commit of more than one write-back step leaves the base with the mid’s data', async () => {
    const layer = new BlockLayer();
    const SIZE = 2.5 * COMMIT_WRITEBACK_EVERY;
    const base = await memoryQcow2(layer, 'base', SIZE);
    await fill(base, 100 * MiB, 8 * MiB, 0x11);
    const mid = await memoryQcow2(layer, 'mid', SIZE, base);
    // Two thirds of 2.3 steps hold data: more than one early flush step is copied.
    for (let at = 0; at < 2.3 * COMMIT_WRITEBACK_EVERY; at += 3 * MiB) await fill(mid, at, 2 * MiB, (at / MiB) & 0xff);
    const top = await memoryQcow2(layer, 'top', SIZE, mid);
    const expected = await readAll(mid);
    const job = await layer.startJob({ type: 'commit', jobId: 'c', device: 'top', topNode: 'mid', baseNode: 'base' });
    await job.wait();
    expect(top.child('backing')).toBe(base);
    expect(Buffer.from(await readAll(base)).equals(Buffer.from(expected))).toBe(true);
    await layer.close();
  });
});
