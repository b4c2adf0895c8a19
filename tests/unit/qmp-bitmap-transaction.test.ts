import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockLayer, type QmpContext, QmpError, runCommand } from '../../src/index.js';

const MiB = 1 << 20;
const NAMES = ['a', 'b', 'c', 'd'];

const ctx = (layer: BlockLayer): QmpContext => ({ layer, session: { negotiated: true, quitRequested: false } });

/** Two null drives of the same size (nodes n0, n1) with bitmaps a (64 KiB), b (4 KiB, disabled) on n0 and a on n1, dirtied by `writes`. */
async function setUp(writes: [number, number][]): Promise<BlockLayer> {
  const layer = new BlockLayer();
  const d0 = await layer.openDrive({ id: 'd0', driver: 'null', size: MiB, nodeName: 'n0' });
  const d1 = await layer.openDrive({ id: 'd1', driver: 'null', size: MiB, nodeName: 'n1' });
  d0.addDirtyBitmap('a', { granularity: 65536 });
  d0.addDirtyBitmap('b', { granularity: 4096 });
  d1.addDirtyBitmap('a', { granularity: 512 });
  for (const [i, [offset, length]] of writes.entries()) {
    await (i % 2 === 0 ? d0 : d1).write(offset, new Uint8Array(length));
    if (i === 1) d0.disableDirtyBitmap('b');
  }
  return layer;
}

/** Every bitmap of every node: name, flags and its dirty runs. */
function state(layer: BlockLayer): unknown {
  return layer.listDrives().map((d) => [d.node.name, d.bitmapNode.bitmaps.all().map((b) => [b.name, b.granularity, b.recording, b.busy, b.persistent, [...b.granules.runs()]])]);
}

// Mostly nodes that exist, so that many transactions go through.
const node = fc.oneof({ arbitrary: fc.constantFrom('n0', 'n1', 'd0'), weight: 12 }, { arbitrary: fc.constant('nx'), weight: 1 });
const name = fc.constantFrom(...NAMES);
const action = fc.oneof(
  fc.record({ type: fc.constant('block-dirty-bitmap-add'), data: fc.record({ node, name, granularity: fc.constantFrom(512, 4096, 65536, 65536, 1000) }, { requiredKeys: ['node', 'name'] }) }),
  fc.record({ type: fc.constantFrom('block-dirty-bitmap-remove', 'block-dirty-bitmap-clear', 'block-dirty-bitmap-enable', 'block-dirty-bitmap-disable'), data: fc.record({ node, name }) }),
  fc.record({
    type: fc.constant('block-dirty-bitmap-merge'),
    data: fc.record({ node, target: name, bitmaps: fc.array(fc.oneof(name, fc.record({ node, name })), { minLength: 1, maxLength: 3 }) }),
  }),
);
const writes = fc.array(fc.tuple(fc.integer({ min: 0, max: MiB - 1 }), fc.integer({ min: 1, max: 65536 })).map(([o, l]): [number, number] => [o, Math.min(l, MiB - o)]), { maxLength: 6 });

describe('QMP transaction of bitmap actions', () => {
  it('ending in abort changes nothing, whatever came before', async () => {
    await fc.assert(
      fc.asyncProperty(writes, fc.array(action, { maxLength: 6 }), async (w, actions) => {
        const layer = await setUp(w);
        try {
          const before = state(layer);
          const answer = await runCommand({ execute: 'transaction', arguments: { actions: [...actions, { type: 'abort', data: {} }] } }, ctx(layer)).then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(answer).toBeInstanceOf(QmpError);
          expect(state(layer)).toEqual(before);
        } finally {
          await layer.close();
        }
      }),
      { numRuns: 150 },
    );
  });

  it('either changes nothing (and fails) or does what the same commands one by one do (removes last)', async () => {
    let succeeded = 0;
    await fc.assert(
      fc.asyncProperty(writes, fc.array(action, { minLength: 1, maxLength: 4 }), async (w, actions) => {
        const [together, oneByOne] = [await setUp(w), await setUp(w)];
        try {
          const before = state(together);
          const failed = await runCommand({ execute: 'transaction', arguments: { actions } }, ctx(together)).then(
            () => false,
            () => true,
          );
          if (failed) {
            expect(state(together)).toEqual(before);
            return;
          }
          succeeded++;
          // QEMU's remove keeps the bitmap, busy, until the transaction commits, so a later action
          // of the same transaction may still merge from it: one by one, the removes come last
          const removesLast = [...actions.filter((a) => a.type !== 'block-dirty-bitmap-remove'), ...actions.filter((a) => a.type === 'block-dirty-bitmap-remove')];
          for (const a of removesLast) await runCommand({ execute: a.type, arguments: a.data }, ctx(oneByOne));
          expect(state(together)).toEqual(state(oneByOne));
        } finally {
          await together.close();
          await oneByOne.close();
        }
      }),
      { numRuns: 300 },
    );
    // the property saw transactions that did something, not only refusals (about one in eight goes through)
    expect(succeeded).toBeGreaterThan(12);
  });
});
