// Property of copy-mode write-blocking: every write or write-zeroes a guest makes while the
// mirror runs is on the target when it completes (whatever the copy's speed, so also far ahead of
// it), and after job-complete the drive reads the target, which holds exactly what the guest last
// saw. Discards are mixed in (they go to the source only and are copied in the background).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../src/clock.js';
import { BlockLayer } from '../../src/layer.js';

const SIZE = 1 << 20;

const opArb = fc.record({
  kind: fc.constantFrom('write', 'write', 'zero', 'discard'),
  offset: fc.integer({ min: 0, max: SIZE - 1 }),
  length: fc.integer({ min: 1, max: 40_000 }),
  byte: fc.integer({ min: 1, max: 255 }),
  waitMs: fc.integer({ min: 0, max: 120 }),
});

describe('mirror job, copy-mode write-blocking (property)', () => {
  it('each write is on the target when it completes; the target ends equal to what the guest wrote', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(opArb, { maxLength: 25 }),
        fc.constantFrom(0, 4096, 1 << 20),
        fc.constantFrom(512, 4096, 65536),
        fc.constantFrom(0, 65536, 262144),
        fc.constantFrom<'full' | 'none'>('full', 'none'),
        async (ops, speed, granularity, bufSize, sync) => {
          const clock = new VirtualClock();
          const layer = new BlockLayer({ clock });
          try {
            const source = await layer.addNode({ driver: 'memory', size: SIZE, nodeName: 'src' });
            await source.write(0, new Uint8Array(SIZE).fill(0x42));
            const target = await layer.addNode({ driver: 'memory', size: SIZE, nodeName: 'tgt' });
            if (sync === 'none') await target.write(0, new Uint8Array(SIZE).fill(0x42));
            const drive = layer.attachDrive(source, { id: 'd0' });
            const model = new Uint8Array(SIZE).fill(0x42);
            const job = await layer.startJob({ type: 'mirror', device: 'd0', target: 'tgt', sync, speed, granularity, bufSize, copyMode: 'write-blocking' });
            await clock.advance(0);
            const onTarget = new Uint8Array(40_000);
            for (const op of ops) {
              await clock.advance(op.waitMs);
              const length = Math.min(op.length, SIZE - op.offset);
              if (op.kind === 'write') {
                const data = new Uint8Array(length).fill(op.byte);
                await drive.write(op.offset, data);
                model.set(data, op.offset);
                await target.read(op.offset, onTarget.subarray(0, length));
                expect(Buffer.compare(onTarget.subarray(0, length), data)).toBe(0);
              } else if (op.kind === 'zero') {
                await drive.writeZeroes(op.offset, length);
                model.fill(0, op.offset, op.offset + length);
                await target.read(op.offset, onTarget.subarray(0, length));
                expect(onTarget.subarray(0, length).every((b) => b === 0)).toBe(true);
              } else {
                // A memory node's discard reads back as zeroes: the model follows what the source reads.
                await drive.discard(op.offset, length);
                await source.read(op.offset, model.subarray(op.offset, op.offset + length));
              }
            }
            for (let t = 0; job.status !== 'ready'; t += 50) {
              if (t > 600_000) throw new Error('never READY');
              await clock.advance(50);
            }
            job.complete();
            for (let t = 0; (job.status as string) !== 'null'; t += 50) {
              if (t > 600_000) throw new Error('never ended');
              await clock.advance(50);
            }
            await job.wait();
            expect(drive.node).toBe(target);
            const got = new Uint8Array(SIZE);
            await target.read(0, got);
            expect(Buffer.compare(got, model)).toBe(0);
          } finally {
            await layer.close();
          }
        },
      ),
      { numRuns: 30 },
    );
  }, 120_000);
});
