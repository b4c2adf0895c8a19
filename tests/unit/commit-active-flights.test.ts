// The active commit copies several pieces at once: guest writes racing with pieces in flight
// (over the same ranges, again and again) must all reach the base; a failed piece fails the job
// once the others have settled.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as z from 'zod';
import { BlockLayer } from '../../src/layer.js';
import { type DriverInstance, defineDriver } from '../../src/node/driver.js';
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

/** The first write to offset 0 of the base while armed waits `delayMs`; the rest pass: an old piece lands after a newer one unless the job orders them. */
let armed = false;
let firstHeld: (() => void) | undefined;
const slowFirstWrite = defineDriver({
  name: 'slow-first-write',
  capabilities: { kind: 'filter' },
  schema: z.object({ delayMs: z.number().int().nonnegative() }).strict(),
  children: { file: 'required' },
  async open({ options, children }): Promise<DriverInstance> {
    const file = children.get('file')!;
    let held = false;
    return {
      alignment: 1,
      growable: true,
      length: () => file.length,
      read: (offset, buffer) => file.read(offset, buffer),
      async write(offset, data) {
        if (armed && offset === 0 && !held) {
          held = true;
          firstHeld?.();
          await new Promise((r) => setTimeout(r, options.delayMs));
        }
        return file.write(offset, data);
      },
      writeZeroes: (offset, length) => file.writeZeroes(offset, length),
      discard: (offset, length) => file.discard(offset, length),
      flush: () => file.flush(),
      blockStatus: (offset, length) => file.blockStatus(offset, length),
      async close() {},
      info: () => ({}),
    };
  },
});

describe('active commit ordering', () => {
  it('a piece copied again while its older copy is still being written lands after it', async () => {
    const layer = new BlockLayer();
    layer.registerDriver(slowFirstWrite);
    const base = await layer.addNode({ driver: 'slow-first-write', nodeName: 'base', delayMs: 300, file: { driver: 'memory', size: SIZE } } as never);
    await fill(base, 0, SIZE, 0x11);
    const top = await memoryQcow2(layer, 'top', SIZE, base);
    // Twelve pieces of data: the job is still starting later ones when the guest writes the first.
    await fill(top, 0, 12 * MiB, 0x22);
    const drive = layer.attachDrive(top, { id: 'disk0' });
    armed = true;
    const held = new Promise<void>((r) => {
      firstHeld = r;
    });
    try {
      const job = await layer.startJob({ type: 'commit', device: 'disk0' });
      const ready = new Promise<void>((r) => job.once('ready', () => r()));
      // The first piece's write to the base is held; the guest now changes what it copied.
      await held;
      await drive.write(0, new Uint8Array(64 * 1024).fill(0x33));
      await ready;
      const expected = await readAll(top);
      job.complete();
      await job.wait();
      expect(drive.node).toBe(base);
      const got = await readAll(base);
      expect(got[0]).toBe(0x33);
      expect(same(got, expected)).toBe(true);
    } finally {
      armed = false;
      firstHeld = undefined;
      await drive.close();
      await layer.close();
    }
  });
});
