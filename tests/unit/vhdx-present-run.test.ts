import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Bat, batGeometry } from '../../src/drivers/vhdx/bat.js';
import * as L from '../../src/drivers/vhdx/limits.js';

const MiB = L.MiB;

/** A BAT of `states.length` blocks of `blockSize` bytes, block b at `hosts[b]` (MiB multiples). */
function makeBat(blockSize: number, states: number[], hosts: number[]): Bat {
  const g = batGeometry(states.length * blockSize, blockSize, 512, false);
  const bat = new Bat(g, new Uint8Array(g.entries * 8));
  for (let b = 0; b < states.length; b++) bat.set(b, states[b], hosts[b]);
  return bat;
}

/** The model: blocks from `block` while fully present and each one block past the one before, at most `max`. */
function modelRun(states: number[], hosts: number[], blockSize: number, block: number, max: number): number {
  let n = 1;
  while (n < max && block + n < states.length && states[block + n] === L.PAYLOAD_BLOCK_FULLY_PRESENT && hosts[block + n] === hosts[block + n - 1] + blockSize) n++;
  return n;
}

describe('vhdx Bat.presentRun', () => {
  it('joins fully present blocks that follow each other in the file, and stops at a gap, another state, max or the disk end', () => {
    const P = L.PAYLOAD_BLOCK_FULLY_PRESENT;
    const Z = L.PAYLOAD_BLOCK_ZERO;
    const bs = MiB;
    // blocks 0-2 contiguous from 8 MiB, block 3 elsewhere, 4 zero, 5-6 contiguous again
    const bat = makeBat(bs, [P, P, P, P, Z, P, P], [8, 9, 10, 20, 0, 21, 22].map((m) => m * MiB));
    expect(bat.presentRun(0, 100)).toBe(3);
    expect(bat.presentRun(0, 2)).toBe(2);
    expect(bat.presentRun(1, 100)).toBe(2);
    expect(bat.presentRun(2, 100)).toBe(1); // block 3 is not right after block 2
    expect(bat.presentRun(3, 100)).toBe(1); // block 4 is ZERO
    expect(bat.presentRun(5, 100)).toBe(2); // the disk ends
    expect(bat.presentRun(5, 1)).toBe(1);
  });

  it('crosses the sector bitmap entries between chunks (the BAT index skips them, the file need not)', () => {
    // 32 MiB blocks with 512-byte sectors: 128 payload blocks per chunk, then a bitmap entry
    const bs = 32 * MiB;
    const states = new Array(130).fill(L.PAYLOAD_BLOCK_FULLY_PRESENT);
    const hosts = states.map((_, b) => 4 * MiB + b * bs);
    const bat = makeBat(bs, states, hosts);
    expect(bat.g.chunkRatio).toBe(128);
    expect(bat.presentRun(120, 1000)).toBe(10);
  });

  it('agrees with a model on random BATs', () => {
    const P = L.PAYLOAD_BLOCK_FULLY_PRESENT;
    fc.assert(
      fc.property(
        fc.array(fc.record({ state: fc.constantFrom(P, P, P, L.PAYLOAD_BLOCK_NOT_PRESENT, L.PAYLOAD_BLOCK_ZERO), jump: fc.boolean() }), { minLength: 1, maxLength: 40 }),
        fc.nat(),
        fc.integer({ min: 1, max: 50 }),
        (blocks, at, max) => {
          const bs = 2 * MiB;
          let host = 4 * MiB;
          const hosts = blocks.map((b) => {
            host += b.jump ? 3 * bs : bs;
            return host;
          });
          const states = blocks.map((b) => b.state);
          const first = states.indexOf(P, at % states.length);
          if (first < 0) return;
          const bat = makeBat(bs, states, hosts);
          expect(bat.presentRun(first, max)).toBe(modelRun(states, hosts, bs, first, max));
        },
      ),
    );
  });
});
