import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { patternBytes } from '../helpers/pattern-bytes.js';
import { assertChecksClean, convertedDifference, modelOfImage, requireQemuTools } from '../helpers/qcow2-judge.js';
import type { ImageKind } from '../helpers/qcow2-kinds.js';
import { ok } from '../helpers/tools.js';

/**
 * Writes into clusters the image owns alone go straight to the file, past the writer's queue
 * (src/drivers/qcow2/in-place-writes.ts). On preallocated images, where nearly every write is
 * such a write, random batches in flight together (overlapping writes, whole-cluster discards,
 * write-zeroes, flushes; and, on an image with an internal snapshot, writes that must copy a
 * shared cluster first) must leave the image equal to a model applying them in arrival order,
 * as qemu-img convert reads it, and qemu-img check clean.
 */

const available = requireQemuTools('qcow2 in-place write property tests');
const KiB = 1024;
const CS = 64 * KiB;
const SIZE = 4 * 1024 * KiB;
/** Requests aim at the first clusters so that they overlap often. */
const HOT = 8 * CS;

interface Kind {
  name: string;
  create: string[];
  /** Run after the image is made (qemu-img or qemu-io argument lists). */
  after: (image: string) => Promise<unknown>;
}

const fill = (image: string) => ok('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x5a 0 ${HOT}`, '-c', `write -P 0x33 ${HOT} ${HOT}`, image]);
const KINDS: Kind[] = [
  { name: 'preallocation=metadata', create: ['-o', 'preallocation=metadata'], after: fill },
  { name: 'preallocation=falloc, extended L2', create: ['-o', 'preallocation=falloc,extended_l2=on'], after: fill },
  {
    name: 'data shared with an internal snapshot (the first write to a cluster copies it)',
    create: ['-o', 'preallocation=metadata'],
    after: async (image) => {
      await fill(image);
      await ok('qemu-img', ['snapshot', '-c', 's1', image]);
    },
  },
];

type Op =
  | { t: 'write'; offset: number; length: number; seed: number }
  | { t: 'zero'; offset: number; length: number }
  | { t: 'discard'; cluster: number; clusters: number }
  | { t: 'flush' };

const sector = (max: number) => fc.integer({ min: 0, max: max / 512 - 1 }).map((n) => n * 512);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ t: fc.constant('write' as const), offset: sector(HOT), length: fc.integer({ min: 1, max: 24 }).map((n) => n * 512), seed: fc.nat(255) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('zero' as const), offset: sector(HOT), length: fc.integer({ min: 1, max: 160 }).map((n) => n * 512) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('discard' as const), cluster: fc.integer({ min: 0, max: HOT / CS - 1 }), clusters: fc.integer({ min: 1, max: 2 }) }) },
  { weight: 1, arbitrary: fc.constant({ t: 'flush' as const }) },
);
const batchesArb = fc.array(fc.array(opArb, { minLength: 1, maxLength: 24 }), { minLength: 1, maxLength: 4 });

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qcow2-inplace-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const judgeKind: ImageKind = { name: 'inplace', format: 'qcow2', clusterSize: CS, size: SIZE, discardZeroes: true, backing: false, lazyRefcounts: false, ordersOverlappingWrites: true, make: async () => '' };

async function runBatches(kind: Kind, stem: string, batches: Op[][]): Promise<void> {
  const image = path.join(dir, `${stem}.qcow2`);
  fs.rmSync(image, { force: true });
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', ...kind.create, image, String(SIZE)]);
  await kind.after(image);
  const model = await modelOfImage(judgeKind, image, path.join(dir, `${stem}.scratch`));
  const layer = new BlockLayer();
  try {
    const drive = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: image } });
    for (const batch of batches) {
      const inFlight: Promise<void>[] = [];
      for (const op of batch) {
        if (op.t === 'write') {
          const data = patternBytes(op.seed, op.length);
          model.write(op.offset, data);
          inFlight.push(drive.write(op.offset, data));
        } else if (op.t === 'zero') {
          model.writeZeroes(op.offset, op.length);
          inFlight.push(drive.writeZeroes(op.offset, op.length));
        } else if (op.t === 'discard') {
          model.writeZeroes(op.cluster * CS, op.clusters * CS);
          inFlight.push(drive.discard(op.cluster * CS, op.clusters * CS));
        } else inFlight.push(drive.flush());
      }
      await Promise.all(inFlight);
    }
  } finally {
    await layer.close();
  }
  await assertChecksClean(judgeKind, image, { when: `after ${JSON.stringify(batches)}` });
  const diff = await convertedDifference(judgeKind, image, model, path.join(dir, `${stem}.scratch`));
  if (diff !== null) throw new Error(`qemu-img convert differs from the model: ${diff}`);
  fs.rmSync(image, { force: true });
}

describe.skipIf(!available)('qcow2 in-place writes in flight together match a model (qemu-img convert, qemu-img check)', () => {
  for (const kind of KINDS) {
    it(`${kind.name}: overlapping writes, write-zeroes, discards, flushes in concurrent batches`, async () => {
      let n = 0;
      await fc.assert(
        fc.asyncProperty(batchesArb, (batches) => runBatches(kind, `${kind.name.replace(/\W+/g, '-')}-${n++}`, batches)),
        { numRuns: Number(process.env.QCOW2_INPLACE_RUNS ?? 8), interruptAfterTimeLimit: Number(process.env.QCOW2_PROPERTY_SHRINK_MS ?? 60_000) },
      );
      expect(n).toBeGreaterThan(0);
    }, 180_000);
  }
});
