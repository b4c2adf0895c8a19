// What the mirror property tests share: a 1 MiB memory source under a drive, a memory target,
// a model of what the guest last wrote, random guest operations, and the end of the job
// (READY, complete, the drive on the target, the target equal to the model).
import fc from 'fast-check';
import { expect } from 'vitest';
import type { VirtualClock } from '../../src/clock.js';
import type { Drive } from '../../src/drive.js';
import type { Job } from '../../src/jobs/job.js';
import type { BlockLayer } from '../../src/layer.js';
import type { BlockNode } from '../../src/node/node.js';

export const SIZE = 1 << 20;
const FILL = 0x42;

export interface GuestOp {
  kind: 'write' | 'zero' | 'discard';
  offset: number;
  length: number;
  byte: number;
  waitMs: number;
}

/** A guest operation somewhere in the source, after a pause of up to 120 ms (writes twice as likely). */
export const guestOpArb: fc.Arbitrary<GuestOp> = fc.record({
  kind: fc.constantFrom<GuestOp['kind']>('write', 'write', 'zero', 'discard'),
  offset: fc.integer({ min: 0, max: SIZE - 1 }),
  length: fc.integer({ min: 1, max: 40_000 }),
  byte: fc.integer({ min: 1, max: 255 }),
  waitMs: fc.integer({ min: 0, max: 120 }),
});

export interface MirrorScene {
  source: BlockNode;
  target: BlockNode;
  drive: Drive;
  /** What the guest should read: the source as it was, then every operation applied. */
  model: Uint8Array;
}

/** Source `src` and target `tgt` (already equal to the source for sync none), drive `d0` on the source. */
export async function mirrorScene(layer: BlockLayer, sync: 'full' | 'none'): Promise<MirrorScene> {
  const source = await layer.addNode({ driver: 'memory', size: SIZE, nodeName: 'src' });
  await source.write(0, new Uint8Array(SIZE).fill(FILL));
  const target = await layer.addNode({ driver: 'memory', size: SIZE, nodeName: 'tgt' });
  if (sync === 'none') await target.write(0, new Uint8Array(SIZE).fill(FILL));
  return { source, target, drive: layer.attachDrive(source, { id: 'd0' }), model: new Uint8Array(SIZE).fill(FILL) };
}

/** Waits `op.waitMs`, applies `op` through the drive and to the model; returns the bytes it covered. */
export async function applyGuestOp(clock: VirtualClock, scene: MirrorScene, op: GuestOp): Promise<number> {
  const { drive, source, model } = scene;
  await clock.advance(op.waitMs);
  const length = Math.min(op.length, SIZE - op.offset);
  if (op.kind === 'write') {
    const data = new Uint8Array(length).fill(op.byte);
    await drive.write(op.offset, data);
    model.set(data, op.offset);
  } else if (op.kind === 'zero') {
    await drive.writeZeroes(op.offset, length);
    model.fill(0, op.offset, op.offset + length);
  } else {
    // A memory node's discard reads back as zeroes: the model follows what the source reads.
    await drive.discard(op.offset, length);
    await source.read(op.offset, model.subarray(op.offset, op.offset + length));
  }
  return length;
}

/** Lets the job reach READY, completes it, and expects the drive on the target and the target equal to the model. */
export async function completeAndCompare(clock: VirtualClock, job: Job, scene: MirrorScene): Promise<void> {
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
  expect(scene.drive.node).toBe(scene.target);
  const got = new Uint8Array(SIZE);
  await scene.target.read(0, got);
  expect(Buffer.compare(got, scene.model)).toBe(0);
}
