import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { convertPipeline } from '../../src/tools/convert-pipeline.js';
import { countPiped } from '../helpers/count-piped.js';
import { dataRuns, zeroRange } from '../../src/tools/convert-zeros.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** One stretch of a test image: data of a byte, explicit zeros (allocated, written as zeros), or a hole. */
type Stretch = { kind: 'data' | 'zeros' | 'hole'; length: number; byte: number };
const stretch = fc.record({
  kind: fc.constantFrom('data', 'data', 'zeros', 'hole'),
  length: fc.integer({ min: 1, max: 700 * KiB }),
  byte: fc.integer({ min: 1, max: 255 }),
}) as fc.Arbitrary<Stretch>;

/** A memory drive laid out by `stretches`; returns it with the bytes it holds. */
async function driveOf(layer: BlockLayer, stretches: Stretch[]) {
  const size = stretches.reduce((n, s) => n + s.length, 0);
  const drive = await layer.openDrive({ driver: 'memory', size });
  const model = new Uint8Array(size);
  let at = 0;
  for (const s of stretches) {
    if (s.kind !== 'hole') {
      const data = new Uint8Array(s.length).fill(s.kind === 'data' ? s.byte : 0);
      // a byte of zeros inside data: zero detection must look at every byte, not only the ends
      if (s.kind === 'data' && s.length > 2) data[s.length >> 1] = 0;
      await drive.write(at, data);
      model.set(data, at);
    }
    at += s.length;
  }
  return { drive, model, size };
}

interface Run {
  offset: number;
  data: Uint8Array;
}

describe('convert zero detection', () => {
  it('zeroRange finds a single non-zero byte anywhere, also past the 64 KiB of zeros it compares with', () => {
    const b = Buffer.alloc(200 * KiB);
    expect(zeroRange(b, 0, b.length)).toBe(true);
    for (const at of [0, 1, 65535, 65536, 150 * KiB, b.length - 1]) {
      b[at] = 7;
      expect(zeroRange(b, 0, b.length)).toBe(false);
      expect([zeroRange(b, 0, at), zeroRange(b, at + 1, b.length), zeroRange(b, at, at + 1)]).toEqual([true, true, false]);
      b[at] = 0;
    }
  });

  it('dataRuns: maximal runs of whole grains, exactly the grains holding a non-zero byte (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.nat({ max: 20 * 512 - 1 }), { maxLength: 12 }), fc.integer({ min: 1, max: 20 * 512 }), fc.constantFrom(512, 4096), (marks, length, grain) => {
        const b = Buffer.alloc(length);
        for (const m of marks) if (m < length) b[m] = 1;
        const runs = dataRuns(b, grain);
        const covered = new Uint8Array(Math.ceil(length / grain));
        let last = -1;
        for (const [from, to] of runs) {
          expect(from % grain).toBe(0);
          expect(to === length || to % grain === 0).toBe(true);
          expect(from).toBeGreaterThan(last); // ordered, and never touching the previous run (maximal)
          last = to;
          for (let g = from / grain; g < Math.ceil(to / grain); g++) covered[g] = 1;
        }
        for (let g = 0; g < covered.length; g++) {
          const grainHasData = !b.subarray(g * grain, Math.min(length, (g + 1) * grain)).every((x) => x === 0);
          expect(covered[g] === 1).toBe(grainHasData);
        }
      }),
    );
  });
});

describe('convertPipeline', () => {
  it('writes in guest order, never an all-zero grain, and the writes rebuild the image; progress strictly increases to the size (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(stretch, { minLength: 1, maxLength: 10 }),
        fc.constantFrom(512, 4096, 64 * KiB),
        fc.constantFrom(64 * KiB, 256 * KiB, 1 * MiB),
        fc.integer({ min: 1, max: 5 }),
        async (stretches, grain, chunk, depth) => {
          const layer = new BlockLayer();
          try {
            const { drive, model, size } = await driveOf(layer, stretches);
            const runs: Run[] = [];
            const seen: number[] = [];
            await convertPipeline(
              drive,
              {
                grain,
                write: async (offset, data) => {
                  runs.push({ offset, data: Uint8Array.from(data) });
                },
              },
              { chunk, depth, stop: () => {}, progress: (done) => seen.push(done) },
            );
            const out = new Uint8Array(size);
            let end = 0;
            for (const r of runs) {
              expect(r.offset).toBeGreaterThanOrEqual(end);
              expect(r.offset % grain).toBe(0);
              expect(r.data.length).toBeLessThanOrEqual(Math.max(chunk, grain));
              for (let g = 0; g < r.data.length; g += grain) expect(r.data.subarray(g, g + grain).some((x) => x !== 0)).toBe(true);
              out.set(r.data, r.offset);
              end = r.offset + r.data.length;
            }
            expect(Buffer.from(out).equals(Buffer.from(model))).toBe(true);
            expect(seen.at(-1)).toBe(size);
            expect(seen.every((d, i) => i === 0 || d > seen[i - 1])).toBe(true);
          } finally {
            await layer.close();
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('holes are not read: 1 MiB of data in a 256 MiB drive reads 1 MiB, with at most `depth` reads in flight', async () => {
    await using layer = new BlockLayer();
    const drive = await layer.openDrive({ driver: 'memory', size: 256 * MiB });
    await drive.write(100 * MiB, Buffer.alloc(512 * KiB, 1));
    await drive.write(200 * MiB, Buffer.alloc(512 * KiB, 2));
    let bytesRead = 0;
    let inFlight = 0;
    let most = 0;
    const read = drive.read.bind(drive);
    drive.read = (async (offset: number, target: Uint8Array) => {
      bytesRead += target.length;
      most = Math.max(most, ++inFlight);
      try {
        return await read(offset, target);
      } finally {
        inFlight--;
      }
    }) as typeof drive.read;
    const written = await countPiped(drive, 128 * KiB, 3);
    expect(bytesRead).toBe(1 * MiB);
    expect(written).toBe(1 * MiB);
    expect(most).toBeGreaterThan(1);
    expect(most).toBeLessThanOrEqual(3);
  });

  it('a stop that throws rejects with its error once the reads in flight have settled; nothing is written after it', async () => {
    await using layer = new BlockLayer();
    const drive = await layer.openDrive({ driver: 'memory', size: 16 * MiB });
    await drive.write(0, Buffer.alloc(16 * MiB, 3));
    let inFlight = 0;
    const read = drive.read.bind(drive);
    drive.read = (async (offset: number, target: Uint8Array) => {
      inFlight++;
      try {
        return await read(offset, target);
      } finally {
        inFlight--;
      }
    }) as typeof drive.read;
    const reason = new Error('enough');
    let writes = 0;
    let stopped = false;
    const e = await convertPipeline(
      drive,
      {
        grain: 4096,
        write: async () => {
          expect(stopped).toBe(false);
          writes++;
        },
      },
      {
        chunk: 1 * MiB,
        depth: 4,
        stop: () => {
          if (stopped) throw reason;
        },
        progress: (done) => {
          if (done >= 3 * MiB) stopped = true;
        },
      },
    ).catch((x: unknown) => x);
    expect(e).toBe(reason);
    expect(writes).toBe(3);
    expect(inFlight).toBe(0);
  });

  it('a failed read (blkdebug EIO) rejects with it; the pieces before it are written, none after', async () => {
    await using layer = new BlockLayer();
    const drive = await layer.openDrive({ driver: 'blkdebug', rules: [{ event: 'read', code: 'EIO', offset: 5 * MiB + 10 }], file: { driver: 'memory', size: 8 * MiB } });
    await drive.write(0, Buffer.alloc(8 * MiB, 9));
    const offsets: number[] = [];
    const e = await convertPipeline(drive, { grain: 4096, write: async (o) => void offsets.push(o) }, { chunk: 1 * MiB, depth: 4, stop: () => {}, progress: () => {} }).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'EIO' });
    expect(offsets).toEqual([0, 1, 2, 3, 4].map((m) => m * MiB));
  });
});
