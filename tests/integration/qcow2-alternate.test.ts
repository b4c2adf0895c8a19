import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { patternBytes } from '../helpers/pattern-bytes.js';
import { assertChecksClean, convertedDifference, driveDifference, modelOfImage, openKind, qemuIo, requireQemuTools } from '../helpers/qcow2-judge.js';
import { type ImageKind, KINDS } from '../helpers/qcow2-kinds.js';
import type { DiskModel } from '../helpers/qcow2-model.js';

/**
 * QEMU (qemu-io) and our driver take turns writing the same image: each must read what the
 * other wrote, and after every turn qemu-img check finds no corruption and no leak and
 * qemu-img convert equals the model. Catches metadata the two sides understand differently
 * (refcounts, zero flags, subcluster bitmaps, COW of snapshot-shared clusters).
 */

const available = requireQemuTools('qcow2 alternating qemu-io/blocklayer write tests');
const ROUNDS = Number(process.env.QCOW2_ALTERNATE_ROUNDS ?? 3);
const SEED = Number(process.env.QCOW2_ALTERNATE_SEED ?? Math.floor(Math.random() * 2 ** 31));

/** xorshift32, seeded per kind: the seed in the test name repeats a run. */
function random(seed: number): (n: number) => number {
  let x = seed | 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

type Op = { t: 'write'; offset: number; length: number; seed: number } | { t: 'zero'; offset: number; length: number } | { t: 'discard'; offset: number; length: number };

/** A few operations on random regions: half in the first 8 clusters (so turns overlap), half anywhere. */
function randomOps(kind: ImageKind, rnd: (n: number) => number): Op[] {
  const c = kind.clusterSize;
  const ops: Op[] = [];
  for (let i = 0, n = 3 + rnd(4); i < n; i++) {
    const window = rnd(2) === 0 ? Math.min(kind.size, 8 * c) : kind.size;
    const unit = [c, 512, 1][rnd(3)];
    const offset = Math.floor(rnd(window) / unit) * unit;
    const length = Math.min(kind.size - offset, Math.max(unit, Math.floor(rnd(3 * c) / unit) * unit));
    const what = rnd(kind.discardZeroes ? 5 : 4);
    if (what <= 1) ops.push({ t: 'write', offset, length, seed: rnd(2 ** 31) });
    else if (what === 2 || what === 3) ops.push({ t: 'zero', offset, length });
    else {
      const start = Math.floor(offset / c) * c;
      ops.push({ t: 'discard', offset: start, length: Math.min(kind.size - start, Math.ceil(length / c) * c) });
    }
  }
  return ops;
}

function apply(model: DiskModel, op: Op, data?: Uint8Array): void {
  if (op.t === 'write') model.write(op.offset, data ?? patternBytes(op.seed, op.length));
  else if (op.t === 'zero') model.writeZeroes(op.offset, op.length);
  else model.discard(op.offset, op.length);
}

let dir: string;
const layer = new BlockLayer();
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qcow2-alt-'));
});
afterAll(async () => {
  await layer.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const ALTERNATE_KINDS: ImageKind[] = [
  KINDS.raw,
  KINDS['v3-64k'],
  KINDS['v3-512'],
  KINDS['v2-64k'],
  KINDS['refcount1-512'],
  KINDS['extl2-64k'],
  KINDS['data-file'],
  KINDS['backing-qcow2'],
  KINDS['backing-compressed'],
  KINDS.snapshot,
  KINDS['lazy-refcounts'],
];

describe.skipIf(!available)('qcow2 images written alternately by qemu-io and by us stay consistent', () => {
  for (const [k, kind] of ALTERNATE_KINDS.entries()) {
    const seed = (SEED + k * 7919) | 0;
    it(`${kind.name}: ${ROUNDS} rounds of qemu-io writes then ours (seed ${seed}; QCOW2_ALTERNATE_SEED=${SEED} repeats)`, async () => {
      const rnd = random(seed);
      const image = await kind.make(dir, kind.name);
      const scratch = path.join(dir, `${kind.name}.converted.raw`);
      const model = await modelOfImage(kind, image, scratch);
      for (let round = 0; round < ROUNDS; round++) {
        // QEMU's turn: qemu-io fills with one byte value per write.
        const theirs = randomOps(kind, rnd);
        const commands = theirs.map((op) => (op.t === 'write' ? `write -P 0x${(op.seed & 0xff).toString(16)} ${op.offset} ${op.length}` : op.t === 'zero' ? `write -z ${op.offset} ${op.length}` : `discard ${op.offset} ${op.length}`));
        await qemuIo(kind, image, commands);
        for (const op of theirs) apply(model, op, op.t === 'write' ? Buffer.alloc(op.length, op.seed & 0xff) : undefined);
        await assertChecksClean(kind, image, { when: `after qemu-io's round ${round}: ${commands.join('; ')}` });

        // Our turn: read what QEMU wrote, then write.
        const ours = randomOps(kind, rnd);
        const drive = await openKind(layer, kind, image);
        try {
          const before = await driveDifference(drive, model);
          if (before !== null) throw new Error(`round ${round}: after qemu-io (${commands.join('; ')}) our reads differ: ${before}`);
          for (const op of ours) {
            if (op.t === 'write') await drive.write(op.offset, patternBytes(op.seed, op.length));
            else if (op.t === 'zero') await drive.writeZeroes(op.offset, op.length);
            else await drive.discard(op.offset, op.length);
            apply(model, op);
          }
          await drive.flush();
        } finally {
          await drive.close();
        }
        const what = `after our round ${round}: ${JSON.stringify(ours)}`;
        await assertChecksClean(kind, image, { when: what });
        const differs = await convertedDifference(kind, image, model, scratch);
        if (differs !== null) throw new Error(`${what}: qemu-img convert differs from the model: ${differs}`);
      }
    }, 180_000);
  }
});
