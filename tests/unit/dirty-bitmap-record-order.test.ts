// A write straight to a node (NBD, jobs) is marked in the node's dirty bitmaps before its caller
// sees it settle, with no promise in between: the caller's own reaction already finds it dirty.
// And the granule set's remembered page (the write path's shortcut) follows resizes and drops.
import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { GranuleSet } from '../../src/node/granule-set.js';
import { heldDriver } from '../helpers/held-driver.js';

const SIZE = 16 * 4096;
const G = 4096;

describe('recording a write made straight to the node', () => {
  for (const ok of [true, false]) {
    it(`marks it before the caller's reaction runs (${ok ? 'done' : 'failed'}), for write, write-zeroes and discard`, async () => {
      await using layer = new BlockLayer();
      const pending: ((ok: boolean) => void)[] = [];
      layer.registerDriver(heldDriver(SIZE, (settle) => pending.push(settle)));
      const d = await layer.openDrive({ driver: 'held' });
      d.addDirtyBitmap('b', { granularity: G });
      const node = d.bitmapNode;
      const bitmap = node.bitmaps.get('b');
      const seen: boolean[] = [];
      const look = (offset: number) => () => void seen.push(bitmap.isDirty(offset));
      const calls = [node.write(0, new Uint8Array(G)), node.writeZeroes(2 * G, G), node.discard(4 * G, G)];
      calls.forEach((p, i) => void p.then(look(2 * i * G), look(2 * i * G)));
      expect(pending.length).toBe(3);
      // Nothing in flight is marked.
      for (let i = 0; i < 3; i++) expect(bitmap.isDirty(2 * i * G)).toBe(false);
      for (const settle of pending) settle(ok);
      await Promise.allSettled(calls);
      expect(seen).toEqual([true, true, true]);
      expect(bitmap.count).toBe(3 * G);
      // The caller gets the failure.
      if (!ok) for (const p of calls) await expect(p).rejects.toMatchObject({ code: 'EIO' });
    });
  }
});

describe('the granule set remembered page', () => {
  it('a shrink that cuts the remembered page leaves the granules past the new size out', () => {
    const set = new GranuleSet(5000);
    set.addOne(4999);
    set.addOne(4998);
    set.resize(4500);
    expect(set.count).toBe(0);
    set.addOne(4600);
    expect(set.count).toBe(0);
    expect(set.has(4600)).toBe(false);
    set.addOne(4400);
    expect(set.count).toBe(1);
    set.resize(6000);
    set.addOne(4600);
    expect(set.count).toBe(2);
    expect([...set.runs()]).toEqual([
      [4400, 4401],
      [4600, 4601],
    ]);
  });

  it('a page dropped by a remove, clear or replace is not marked through', () => {
    const set = new GranuleSet(10_000);
    set.addOne(10);
    set.remove(0, 4096);
    set.addOne(10);
    expect(set.count).toBe(1);
    expect(set.has(10)).toBe(true);
    set.clear();
    set.addOne(10);
    expect(set.count).toBe(1);
    const other = new GranuleSet(10_000);
    other.addOne(11);
    set.replaceWith(other);
    set.addOne(10);
    expect(set.count).toBe(2);
    expect(other.count).toBe(1);
    expect(other.has(10)).toBe(false);
  });
});
