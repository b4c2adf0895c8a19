// Property: whatever a guest writes, zeroes or discards while a mirror runs (at any speed, any
// buffer size, any granularity), after job-complete the drive reads the target and the target
// holds exactly what the guest last saw.
import fc from 'fast-check';
import { describe, it } from 'vitest';
import { VirtualClock } from '../../src/clock.js';
import { BlockLayer } from '../../src/layer.js';
import { applyGuestOp, completeAndCompare, guestOpArb, mirrorScene } from '../helpers/mirror-property.js';

describe('mirror job (property)', () => {
  it('the target ends equal to what the guest wrote, whenever it wrote', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(guestOpArb, { maxLength: 25 }),
        fc.constantFrom(0, 1 << 20, 4 << 20),
        fc.constantFrom(512, 4096, 65536),
        fc.constantFrom(0, 65536, 262144),
        fc.constantFrom<'full' | 'none'>('full', 'none'),
        async (ops, speed, granularity, bufSize, sync) => {
          const clock = new VirtualClock();
          const layer = new BlockLayer({ clock });
          try {
            const scene = await mirrorScene(layer, sync);
            const job = await layer.startJob({ type: 'mirror', device: 'd0', target: 'tgt', sync, speed, granularity, bufSize });
            for (const op of ops) await applyGuestOp(clock, scene, op);
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
