import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { BlockLayer, type Drive } from '../../src/index.js';
import { patternBytes } from '../helpers/pattern-bytes.js';
import { assertChecksClean, convertedDifference, driveDifference, modelOfImage, openKind, ordersOverlappingWrites, qemuIo, requireQemuTools } from '../helpers/qcow2-judge.js';
import { type ImageKind, KINDS } from '../helpers/qcow2-kinds.js';
import type { DiskModel } from '../helpers/qcow2-model.js';

/**
 * Random operation sequences on writable images, judged by a memory model, by qemu-img check
 * (no corruption, no leak), by qemu-img convert (QEMU's view equals the model) and by a
 * qemu-io write on top that we must read back. The `raw` kind runs the same harness over the
 * raw driver (writable today) to show the harness itself passes where the driver is right.
 */

const available = requireQemuTools('qcow2 write property tests');
const RUNS = Number(process.env.QCOW2_PROPERTY_RUNS ?? 3);
const SEED = process.env.QCOW2_PROPERTY_SEED === undefined ? undefined : Number(process.env.QCOW2_PROPERTY_SEED);

type Single =
  | { t: 'write'; offset: number; length: number; seed: number }
  | { t: 'zero'; offset: number; length: number }
  | { t: 'discard'; offset: number; length: number }
  | { t: 'flush' };
type Op = Single | { t: 'batch'; ops: Single[] };

/** Regions where bugs live: the first clusters, both sides of an L2 table boundary, the end; plus anywhere. */
function zones(kind: ImageKind): [number, number][] {
  const c = kind.clusterSize;
  const z: [number, number][] = [
    [0, Math.min(kind.size, 4 * c)],
    [Math.max(0, kind.size - 4 * c), kind.size],
    [0, kind.size],
  ];
  if (kind.l2Span !== undefined && kind.l2Span < kind.size) {
    // Every L2 boundary is aimed at (a 1 MiB image with 512 B clusters has 32 of them).
    for (let b = kind.l2Span; b < kind.size; b += kind.l2Span) z.push([Math.max(0, b - 3 * c), Math.min(kind.size, b + 3 * c)]);
  }
  return z;
}

type Align = 'cluster' | 'sector' | 'byte';
const ALIGN: Align[] = ['cluster', 'sector', 'byte'];

/** A range in a zone: offset and length (1 B .. 3 clusters) aligned to clusters, 512 B sectors or nothing. */
function rangeArb(kind: ImageKind) {
  const z = zones(kind);
  return fc.record({ zone: fc.nat(z.length - 1), at: fc.double({ min: 0, max: 1, noNaN: true }), len: fc.double({ min: 0, max: 1, noNaN: true }), align: fc.constantFrom(...ALIGN) }).map(({ zone, at, len, align }) => {
    const unit = align === 'cluster' ? kind.clusterSize : align === 'sector' ? 512 : 1;
    const [from, to] = z[zone];
    const maxLen = 3 * kind.clusterSize;
    let offset = Math.floor((from + at * (to - from)) / unit) * unit;
    let length = Math.max(unit, Math.floor((len * maxLen) / unit) * unit);
    if (offset >= kind.size) offset = kind.size - unit;
    if (offset + length > kind.size) length = kind.size - offset;
    return { offset, length };
  });
}

/** Whole clusters (1..3) in a zone: what qcow2 discards for sure. */
function clustersArb(kind: ImageKind) {
  return rangeArb(kind).map(({ offset, length }) => {
    const c = kind.clusterSize;
    const start = Math.floor(offset / c) * c;
    const end = Math.min(kind.size, Math.max(start + c, Math.ceil((offset + length) / c) * c));
    return { offset: start, length: end - start };
  });
}

function opsArb(kind: ImageKind): fc.Arbitrary<Op[]> {
  const singles: fc.Arbitrary<Single>[] = [
    fc.tuple(rangeArb(kind), fc.integer()).map(([r, seed]) => ({ t: 'write' as const, ...r, seed })),
    fc.tuple(rangeArb(kind), fc.integer()).map(([r, seed]) => ({ t: 'write' as const, ...r, seed })),
    fc.tuple(rangeArb(kind), fc.integer()).map(([r, seed]) => ({ t: 'write' as const, ...r, seed })),
    rangeArb(kind).map((r) => ({ t: 'zero' as const, ...r })),
    fc.constant({ t: 'flush' as const }),
  ];
  // v2 with a backing file: a discarded cluster reads the backing file again; not modelled.
  if (kind.discardZeroes) singles.push(clustersArb(kind).map((r) => ({ t: 'discard' as const, ...r })));
  const single = fc.oneof(...singles);
  const batch = fc.array(single, { minLength: 2, maxLength: 6 }).map((ops) => ({ t: 'batch' as const, ops: ordersOverlappingWrites(kind) ? ops : disjoint(ops) }));
  return fc.array(fc.oneof({ arbitrary: single, weight: 3 }, { arbitrary: batch, weight: 1 }), { minLength: 1, maxLength: 20 });
}

/** The ops of a batch that overlap no earlier one (for kinds that do not order overlapping requests). */
function disjoint(ops: Single[]): Single[] {
  const kept: Single[] = [];
  for (const op of ops) {
    const clash = op.t !== 'flush' && kept.some((k) => k.t !== 'flush' && k.offset < op.offset + op.length && op.offset < k.offset + k.length);
    if (!clash) kept.push(op);
  }
  return kept;
}

function issue(drive: Drive, op: Single): Promise<void> {
  if (op.t === 'write') return drive.write(op.offset, patternBytes(op.seed, op.length));
  if (op.t === 'zero') return drive.writeZeroes(op.offset, op.length);
  if (op.t === 'discard') return drive.discard(op.offset, op.length);
  return drive.flush();
}

function apply(model: DiskModel, op: Single): void {
  if (op.t === 'write') model.write(op.offset, patternBytes(op.seed, op.length));
  else if (op.t === 'zero') model.writeZeroes(op.offset, op.length);
  else if (op.t === 'discard') model.discard(op.offset, op.length);
}

let dir: string;
const layer = new BlockLayer();
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qcow2-prop-'));
});
afterAll(async () => {
  await layer.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** One sequence on a fresh image of `kind`; throws with a description when any judge disagrees. */
async function runSequence(kind: ImageKind, stem: string, ops: Op[], qemuWrite: { offset: number; length: number }): Promise<void> {
  const image = await kind.make(dir, stem);
  const scratch = path.join(dir, `${stem}.converted.raw`);
  try {
    const model = await modelOfImage(kind, image, scratch);
    const drive = await openKind(layer, kind, image);
    try {
      for (const op of ops) {
        if (op.t === 'batch') {
          // Issued together; overlapping requests keep their order of arrival (where the kind promises it), so the model applies them in issue order.
          await Promise.all(op.ops.map((o) => issue(drive, o)));
          for (const o of op.ops) apply(model, o);
        } else {
          await issue(drive, op);
          apply(model, op);
        }
      }
      const ours = await driveDifference(drive, model);
      if (ours !== null) throw new Error(`our reads differ from the model before close: ${ours}`);
    } finally {
      await drive.close();
    }
    await assertChecksClean(kind, image, { when: 'after our writes' });
    const theirs = await convertedDifference(kind, image, model, scratch);
    if (theirs !== null) throw new Error(`qemu-img convert differs from the model: ${theirs}`);

    // QEMU writes on top of what we wrote; we must read its data and keep the rest.
    await qemuIo(kind, image, [`write -P 0x5a ${qemuWrite.offset} ${qemuWrite.length}`]);
    model.write(qemuWrite.offset, Buffer.alloc(qemuWrite.length, 0x5a));
    const again = await openKind(layer, kind, image);
    try {
      const after = await driveDifference(again, model);
      if (after !== null) throw new Error(`after a qemu-io write at ${qemuWrite.offset}+${qemuWrite.length}, our reads differ: ${after}`);
    } finally {
      await again.close();
    }
  } finally {
    for (const f of fs.readdirSync(dir)) if (f.startsWith(`${stem}.`)) fs.rmSync(path.join(dir, f), { force: true });
  }
}

describe.skipIf(!available)('qcow2 writes: random operation sequences match a model, qemu-img check and qemu-img convert', () => {
  for (const kind of Object.values(KINDS) as ImageKind[]) {
    it(`${kind.name}: writes, write-zeroes, discards, flushes, concurrent batches`, async () => {
      let n = 0;
      await fc.assert(
        fc.asyncProperty(opsArb(kind), rangeArb(kind), async (ops, qemuWrite) => {
          await runSequence(kind, `${kind.name}-${n++}`, ops, qemuWrite);
        }),
        {
          numRuns: RUNS,
          ...(SEED === undefined ? {} : { seed: SEED }),
          // Shrinking makes a fresh image per attempt: bounded, so a broken driver fails in seconds, not minutes.
          interruptAfterTimeLimit: Number(process.env.QCOW2_PROPERTY_SHRINK_MS ?? 8000),
        },
      );
    }, 120_000);
  }
});
