/**
 * No false positives of the metadata overlap check: random writes, write-zeroes, discards,
 * resizes, internal snapshots (create, delete, apply) and reopens on a healthy image never make
 * a request fail, never set the corrupt bit, and the guest reads what a plain model says.
 * 512-byte clusters: an L2 table covers 32 KiB and a refcount block 128 KiB, so the L1 table,
 * the refcount table and the snapshot table move and new tables and blocks appear often.
 */
import fs from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createImage, type Drive } from '../../src/index.js';
import { imageSuite } from '../helpers/image-suite.js';
import { patternBytes } from '../helpers/pattern-bytes.js';

const suite = imageSuite('blocklayer-qcow2-overlap-prop-');
const { p, layer } = suite;
const CS = 512;
const START = 256 * 1024;
const RUNS = Number(process.env.QCOW2_OVERLAP_RUNS ?? 12);

type Op =
  | { t: 'write' | 'zero' | 'discard'; at: number; len: number; seed: number }
  | { t: 'resize'; size: number }
  | { t: 'create' }
  | { t: 'delete' | 'apply'; pick: number }
  | { t: 'flush' | 'reopen' };

const frac = fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ t: fc.constant('write' as const), at: frac, len: fc.integer({ min: 1, max: 40 * CS }), seed: fc.nat(1000) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constantFrom('zero' as const, 'discard' as const), at: frac, len: fc.integer({ min: 1, max: 80 * CS }), seed: fc.constant(0) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('resize' as const), size: fc.integer({ min: 64, max: 2048 }).map((k) => k * 512) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('create' as const) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constantFrom('delete' as const, 'apply' as const), pick: fc.nat(10) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constantFrom('flush' as const, 'reopen' as const) }) },
);

const open = (image: string) => layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: image } });

/** Runs `ops` on a new image; returns the model of the guest disk. */
async function run(image: string, ops: Op[]): Promise<{ d: Drive; model: Buffer }> {
  await createImage(image, { format: 'qcow2', size: START, clusterSize: CS });
  let d = await open(image);
  let model = Buffer.alloc(START);
  const snaps: { name: string; content: Buffer }[] = [];
  let n = 0;
  for (const op of ops) {
    if (op.t === 'write' || op.t === 'zero' || op.t === 'discard') {
      const at = Math.floor(op.at * model.length);
      const len = Math.min(op.len, model.length - at);
      if (len <= 0) continue;
      if (op.t === 'write') {
        const data = patternBytes(op.seed, len);
        await d.write(at, data);
        data.copy(model, at);
      } else if (op.t === 'zero') {
        await d.writeZeroes(at, len);
        model.fill(0, at, at + len);
      } else {
        // Whole clusters only read as zeros after a discard (no backing file, v3).
        await d.discard(at, len);
        const a = Math.ceil(at / CS) * CS;
        const b = Math.floor((at + len) / CS) * CS;
        if (b > a) model.fill(0, a, b);
      }
    } else if (op.t === 'resize') {
      await d.resize(op.size, { shrink: true });
      const next = Buffer.alloc(op.size);
      model.copy(next, 0, 0, Math.min(op.size, model.length));
      model = next;
    } else if (op.t === 'create') {
      const name = `s${n++}`;
      await d.node.snapshots!.create({ name });
      snaps.push({ name, content: Buffer.from(model) });
    } else if (op.t === 'delete' || op.t === 'apply') {
      if (snaps.length === 0) continue;
      const i = op.pick % snaps.length;
      if (op.t === 'delete') {
        await d.node.snapshots!.delete(undefined, snaps[i].name);
        snaps.splice(i, 1);
      } else if (snaps[i].content.length === model.length) {
        await d.node.snapshots!.apply(snaps[i].name);
        model = Buffer.from(snaps[i].content);
      }
    } else if (op.t === 'flush') {
      await d.flush();
    } else {
      await d.close();
      d = await open(image);
    }
  }
  return { d, model };
}

describe('qcow2 metadata overlap check: no false positives', () => {
  it('random writes, discards, resizes and snapshots on a healthy image never trip it', async () => {
    let k = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 30 }), async (ops) => {
        const image = p(`prop-${k++}.qcow2`);
        const { d, model } = await run(image, ops);
        try {
          expect(d.length).toBe(model.length);
          expect(Buffer.from(await d.read(0, model.length))).toEqual(model);
        } finally {
          await d.close();
        }
        // incompatible_features: no corrupt bit (nor a dirty one) after a clean close.
        expect(fs.readFileSync(image).readUInt32BE(76)).toBe(0);
        fs.rmSync(image);
      }),
      { numRuns: RUNS },
    );
  }, 300_000);
});
