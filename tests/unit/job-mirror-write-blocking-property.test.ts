// Property of copy-mode write-blocking: every write or write-zeroes a guest makes while the
// mirror runs is on the target when it completes (whatever the copy's speed, so also far ahead of
// it), and after job-complete the drive reads the target, which holds exactly what the guest last
// saw. Discards are mixed in (they go to the source only and are copied in the background).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../src/clock.js';
import { BlockLayer } from '../../src/layer.js';
import { applyGuestOp, completeAndCompare, guestOpArb, mirrorScene } from '../helpers/mirror-property.js';

describe('mirror job, copy-mode write-blocking (property)', () => {
  it('each write is on the target when it completes; the target ends equal to what the guest wrote', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(guestOpArb, { maxLength: 25 }),
        fc.constantFrom(0, 4096, 1 << 20),
        fc.constantFrom(512, 4096, 65536),
        fc.constantFrom(0, 65536, 262144),
        fc.constantFrom<'full' | 'none'>('full', 'none'),
        async (ops, speed, granularity, bufSize, sync) => {
          const clock = new VirtualClock();
          const layer = new BlockLayer({ clock });
          try {
            const scene = await mirrorScene(layer, sync);
            const job = await layer.startJob({ type: 'mirror', device: 'd0', target: 'tgt', sync, speed, granularity, bufSize, copyMode: 'write-blocking' });
            await clock.advance(0);
            const onTarget = new Uint8Array(40_000);
            for (const op of ops) {
              const length = await applyGuestOp(clock, scene, op);
              if (op.kind === 'discard') continue;
              // the write or write-zeroes is on the target as soon as it completed
              await scene.target.read(op.offset, onTarget.subarray(0, length));
              const want = op.kind === 'write' ? op.byte : 0;
              expect(onTarget.subarray(0, length).every((b) => b === want)).toBe(true);
            }
            await completeAndCompare(clock, job, scene);
          } finally {
            await layer.close();
          }
        },
      ),
      { numRuns: 30 },
    );
  }, 120_000);
});
