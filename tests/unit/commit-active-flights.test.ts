// The active commit copies several pieces at once: guest writes racing with pieces in flight
// (over the same ranges, again and again) must all reach the base; a failed piece fails the job
// once the others have settled.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/layer.js';
import { fill, memoryQcow2, readAll } from '../helpers/memory-chain.js';

const MiB = 1 << 20;
const SIZE = 16 * MiB;

const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));

describe('active commit with pieces in flight', () => {
  it('base ends with the top’s view after guest writes racing with the copy', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ at: fc.integer({ min: 0, max: SIZE / 4096 - 64 }), blocks: fc.integer({ min: 1, max: 64 }), byte: fc.integer({ min: 1, max: 255 }), delay: fc.integer({ min: 0, max: 40 }) }), {
          minLength: 1,
          maxLength: 12,
        }),
        async (writes) => {
          const layer = new BlockLayer();
          const base = await memoryQcow2(layer, 'base', SIZE);
          await fill(base, 0, 4 * MiB, 0x11);
          const top = await memoryQcow2(layer, 'top', SIZE, base);
          // Data in most pieces, so that many are in flight at once.
          for (let at = 0; at < SIZE; at += 2 * MiB) await fill(top, at, MiB + 4096, (at / MiB) & 0xff);
          const drive = layer.attachDrive(top, { id: 'disk0' });
          const job = await layer.startJob({ type: 'commit', device: 'disk0' });
          const ready = new Promise<void>((r) => job.once('ready', () => r()));
          // Writes while pieces are in flight: each waits a few turns first, then all race the job.
          await Promise.all(
            writes.map(async (w) => {
              for (let i = 0; i < w.delay; i++) await new Promise((r) => setImmediate(r));
              await drive.write(w.at * 4096, new Uint8Array(w.blocks * 4096).fill(w.byte));
            }),
          );
          await ready;
          const expected = await readAll(top);
          job.complete();
          await job.wait();
          expect(drive.node).toBe(base);
          expect(same(await readAll(base), expected)).toBe(true);
          await drive.close();
          await layer.close();
        },
      ),
      { numRuns: 15 },
    );
  });

  it('a piece that fails under on-error=report fails the job, every piece settled, the drive left on top', async () => {
    const layer = new BlockLayer();
    const base = await memoryQcow2(layer, 'base', SIZE, undefined, undefined, [{ event: 'write', after: 6, once: true }]);
    const top = await memoryQcow2(layer, 'top', SIZE, base);
    await fill(top, 0, SIZE, 0x5a);
    const drive = layer.attachDrive(top, { id: 'disk0' });
    const job = await layer.startJob({ type: 'commit', device: 'disk0' });
    const errors: string[] = [];
    job.on('io-error', (e) => errors.push(`${e.operation}:${e.action}`));
    await expect(job.wait()).rejects.toThrow();
    expect(job.error).toBe('Input/output error');
    expect(errors).toEqual(['write:report']);
    expect(drive.node).toBe(top);
    expect(top.bitmaps.all()).toEqual([]);
    await drive.close();
    await layer.close();
  });
});
