// A mirror's target is written out while the mirror copies (EarlyWriteback, commit-writeback.ts):
// its files are flushed every MIRROR_WRITEBACK_EVERY bytes, and told to start their write-out
// between. What must hold all the same: the target is flushed after the last write and before
// READY (QEMU's mirror_flush), a failed early flush is that flush's failure (never lost), and
// hints go only to writable host files.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EarlyWriteback } from '../../src/jobs/commit-writeback.js';
import type { Job } from '../../src/jobs/job.js';
import { MIRROR_WRITEBACK_EVERY } from '../../src/jobs/mirror-copy.js';
import { BlockLayer } from '../../src/layer.js';
import type { BlockNode } from '../../src/node/node.js';
import { openWritebackHint } from '../../src/platform/writeback.js';
import { fill, readAll } from '../helpers/memory-chain.js';

const MiB = 1 << 20;
/** A disk of 2.5 early-flush steps, about 1.5 steps of it data (two thirds of 2.3): the copy passes an early flush. */
const SIZE = 2.5 * MIRROR_WRITEBACK_EVERY;

/** What happened on `node` (writes and flushes, in order), recorded by wrapping its methods. */
function recordIo(node: BlockNode, log: string[]): void {
  const write = node.write.bind(node);
  const flush = node.flush.bind(node);
  node.write = async (...args: Parameters<BlockNode['write']>) => {
    await write(...args);
    log.push('write');
  };
  node.flush = async () => {
    log.push('flush-begin');
    try {
      await flush();
    } catch (e) {
      log.push('flush-failed');
      throw e;
    }
    log.push('flush-end');
  };
}

/**
 * A source with 2 MiB of data in every 3 MiB of its first 2.3 steps, and a raw target over blkdebug (with
 * `faults`) over a memory file: raw flushes its file only when asked (a qcow2 flushes it on its
 * own too), so every flush of the file before READY is the write-back's or the job's. The
 * target's file records its writes and flushes in `log`.
 */
async function setup(layer: BlockLayer, log: string[], faults: Record<string, unknown>[] = []): Promise<{ source: BlockNode; target: BlockNode }> {
  const source = await layer.addNode({ driver: 'memory', size: SIZE, nodeName: 'src' });
  for (let at = 0; at < 2.3 * MIRROR_WRITEBACK_EVERY; at += 3 * MiB) await fill(source, at, 2 * MiB, ((at / MiB) & 0xff) | 1);
  const target = await layer.addNode({ driver: 'raw', nodeName: 'tgt', file: { driver: 'blkdebug', rules: faults, file: { driver: 'memory', size: SIZE } } });
  recordIo(target.child('file')!, log);
  return { source, target };
}

/** Resolves at the job's READY event with what `log` held then. */
function atReady(job: Job, log: string[]): Promise<string[]> {
  return new Promise((resolve) => job.on('ready', () => resolve([...log])));
}

describe('mirror with early write-back', () => {
  it('flushes the target’s file while it copies, and again after the last write before READY', async () => {
    const layer = new BlockLayer();
    try {
      const log: string[] = [];
      const { source, target } = await setup(layer, log);
      const job = await layer.startJob({ type: 'mirror', jobId: 'm', device: 'src', target: 'tgt', sync: 'full' });
      const seen = await atReady(job, log);
      const lastWrite = seen.lastIndexOf('write');
      // An early flush began while the copy still wrote.
      expect(seen.indexOf('flush-begin')).toBeGreaterThan(-1);
      expect(seen.indexOf('flush-begin')).toBeLessThan(lastWrite);
      // And a flush began after the last write and ended before READY: the target is durable at READY.
      expect(seen.indexOf('flush-begin', lastWrite)).toBeGreaterThan(lastWrite);
      expect(seen.at(-1)).toBe('flush-end');
      expect(Buffer.compare(await readAll(target), await readAll(source))).toBe(0);
      job.complete();
      await job.wait();
    } finally {
      await layer.close();
    }
  });

  it('a failed early flush of the target’s file fails the flush before READY (on-target-error report): no READY', async () => {
    const layer = new BlockLayer();
    try {
      // The target file's first flush fails: the early write-back’s (the copy is about 1.5 steps).
      const log: string[] = [];
      await setup(layer, log, [{ event: 'flush', once: true, code: 'EIO' }]);
      const job = await layer.startJob({ type: 'mirror', jobId: 'm', device: 'src', target: 'tgt', sync: 'full' });
      const events: string[] = [];
      job.on('ready', () => events.push('ready'));
      job.on('io-error', (e) => events.push(`io-error ${e.operation} ${e.action}`));
      await expect(job.wait()).rejects.toThrow(/EIO/);
      // The flush that failed was an early one: the copy wrote on after it, and the flush the
      // job owes before READY failed with it (a later fdatasync would not have reported it).
      expect(log.indexOf('flush-failed')).toBeGreaterThan(-1);
      expect(log.indexOf('flush-failed')).toBeLessThan(log.lastIndexOf('write'));
      expect(events).toEqual(['io-error write report']);
    } finally {
      await layer.close();
    }
  });

  it('a failed early flush with on-target-error ignore is reported once, and the mirror flushes again before READY', async () => {
    const layer = new BlockLayer();
    try {
      const log: string[] = [];
      const { source, target } = await setup(layer, log, [{ event: 'flush', once: true, code: 'EIO' }]);
      const job = await layer.startJob({ type: 'mirror', jobId: 'm', device: 'src', target: 'tgt', sync: 'full', onTargetError: 'ignore' });
      const events: string[] = [];
      job.on('ready', () => events.push('ready'));
      job.on('io-error', (e) => events.push(`io-error ${e.operation} ${e.action}`));
      const seen = await atReady(job, log);
      expect(seen.indexOf('flush-failed')).toBeGreaterThan(-1);
      expect(seen.indexOf('flush-failed')).toBeLessThan(seen.lastIndexOf('write'));
      expect(seen.at(-1)).toBe('flush-end');
      expect(events).toEqual(['io-error write ignore', 'ready']);
      expect(Buffer.compare(await readAll(target), await readAll(source))).toBe(0);
      job.complete();
      await job.wait();
    } finally {
      await layer.close();
    }
  });
});

describe('EarlyWriteback.drain', () => {
  it('waits for the flush in flight and throws its failure once; the write-back goes on after', async () => {
    const pending: { resolve: () => void; reject: (e: unknown) => void }[] = [];
    const file = { flush: () => new Promise<void>((resolve, reject) => pending.push({ resolve, reject })) } as unknown as BlockNode;
    const wb = new EarlyWriteback([file], MiB);
    wb.wrote(MiB);
    let drained = false;
    const d = wb.drain().then(
      () => (drained = true),
      (e: unknown) => e,
    );
    await new Promise((r) => setImmediate(r));
    expect(drained).toBe(false);
    const error = new Error('EIO');
    pending[0]!.reject(error);
    expect(await d).toBe(error);
    await expect(wb.drain()).resolves.toBeUndefined();
    // Still writing back: the next step flushes again.
    wb.wrote(MiB);
    expect(pending).toHaveLength(2);
    pending[1]!.resolve();
    await wb.settle();
  });
});

describe('write-out hints of a target', () => {
  it('go to a writable file node only: none to a read-only file node or a memory node', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-mirror-wb-'));
    const layer = new BlockLayer();
    try {
      const filename = path.join(dir, 'f.raw');
      const other = path.join(dir, 'ro.raw');
      fs.writeFileSync(filename, Buffer.alloc(MiB));
      fs.writeFileSync(other, Buffer.alloc(MiB));
      const probe = await openWritebackHint(filename);
      await probe?.close();
      const canHint = probe === null ? 0 : 1;
      const writable = await layer.addNode({ driver: 'raw', nodeName: 'w', file: { driver: 'file', filename } });
      const readOnly = await layer.addNode({ driver: 'raw', nodeName: 'r', readOnly: true, file: { driver: 'file', filename: other, readOnly: true } });
      const memory = await layer.addNode({ driver: 'raw', nodeName: 'm', file: { driver: 'memory', size: MiB } });
      const counts: number[] = [];
      for (const node of [writable, readOnly, memory]) {
        const wb = await EarlyWriteback.of(node);
        counts.push(wb.hinted);
        await wb.settle();
      }
      expect(counts).toEqual([canHint, 0, 0]);
    } finally {
      await layer.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
