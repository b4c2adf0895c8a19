// Mutated VHD images (bytes changed in the footer copy, dynamic header and BAT, checksums
// sometimes made right again so deeper checks run) open and read, or are refused with a
// BlockError: never another error, never a hang.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockError, BlockLayer } from '../../src/index.js';
import { vpcDriver } from '../../src/drivers/index.js';

/** Sets the one's complement checksum of the structure at `at` (field at `at + field`). */
function reseal(b: Uint8Array, at: number, length: number, field: number): void {
  const v = new DataView(b.buffer, b.byteOffset);
  v.setUint32(at + field, 0);
  let sum = 0;
  for (let i = at; i < at + length; i++) sum += b[i];
  v.setUint32(at + field, ~sum >>> 0);
}

describe('vpc: mutated images', () => {
  it('open and read, or refuse with a BlockError', async () => {
    const layer = new BlockLayer();
    const seed = await layer.openNode({ driver: 'memory', size: 0 });
    await vpcDriver.create!.create(seed, 9 * 1024 * 1024, {});
    const image = await layer.openNode({ driver: 'vpc', file: seed });
    await image.write(0, new Uint8Array(4096).fill(1));
    await image.write(5 * 1024 * 1024, new Uint8Array(4096).fill(2));
    await image.unref();
    const bytes = new Uint8Array(seed.length);
    await seed.read(0, bytes);
    await seed.unref();
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.tuple(fc.nat(2559), fc.nat(255)), { minLength: 1, maxLength: 8 }),
          fc.boolean(),
          fc.boolean(),
          fc.nat(bytes.length),
          async (changes, sealFooter, sealHeader, cut) => {
            const b = bytes.slice(0, cut < 512 ? bytes.length : Math.max(cut, 2560));
            for (const [at, value] of changes) b[at] = value;
            if (sealFooter) reseal(b, 0, 512, 64);
            if (sealHeader) reseal(b, 512, 1024, 36);
            const file = await layer.openNode({ driver: 'memory', size: b.length });
            await file.write(0, b);
            try {
              const node = await layer.openNode({ driver: 'vpc', file, readOnly: true });
              const all = new Uint8Array(Math.min(node.length, 16 * 1024 * 1024));
              await node.read(0, all);
              await node.blockStatusMap(0, all.length);
              await node.unref();
            } catch (e) {
              expect(e).toBeInstanceOf(BlockError);
            } finally {
              await file.unref();
            }
          },
        ),
        { numRuns: 150 },
      );
    } finally {
      await layer.close();
    }
  });
});
