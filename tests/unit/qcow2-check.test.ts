import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkQcow2, compressedExtent, repairRefcounts } from '../../src/drivers/qcow2/check.js';
import type { Qcow2File } from '../../src/drivers/qcow2/check.js';
import { allocateClusters } from '../../src/drivers/qcow2/rebuild.js';
import { entriesPerBlock, RefcountArray, readEntry, refcountMax, writeEntry } from '../../src/drivers/qcow2/refcount-entries.js';

describe('refcount entries of every width', () => {
  for (let order = 0; order <= 6; order++) {
    const bits = 2 ** order;
    it(`${bits}-bit entries round-trip and do not disturb their neighbours`, () => {
      const block = new Uint8Array(512);
      const n = entriesPerBlock(512, order);
      expect(n).toBe(4096 / bits);
      const max = Math.min(refcountMax(order), 2 ** 53 - 1);
      const value = (i: number) => (i * 7 + 3) % (Math.min(max, 1000) + 1);
      for (let i = 0; i < n; i++) writeEntry(block, i, order, value(i));
      for (let i = 0; i < n; i++) expect(readEntry(block, i, order)).toBe(value(i));
      writeEntry(block, 5, order, max);
      expect(readEntry(block, 5, order)).toBe(max);
      expect(readEntry(block, 4, order)).toBe(value(4));
      expect(readEntry(block, 6, order)).toBe(value(6));
    });
  }

  it('sub-byte entries are packed least significant bits first, wider ones big-endian', () => {
    const b = new Uint8Array(8);
    writeEntry(b, 1, 0, 1);
    expect(b[0]).toBe(0b10);
    writeEntry(b, 1, 4, 0x0102);
    expect([...b.subarray(2, 4)]).toEqual([1, 2]);
  });
});

describe('allocation in the in-memory refcounts (the rebuild places new structures)', () => {
  it('takes the first run of free clusters that is long enough, else appends', () => {
    const rc = new RefcountArray(8);
    for (const c of [0, 1, 3, 5, 6]) rc.set(c, 1);
    expect(allocateClusters(rc, 1, { cluster: 0 })).toBe(2);
    // free now: 4 and 7; 4 is too short a run, 7 ends the array and grows into 8
    expect(allocateClusters(rc, 2, { cluster: 0 })).toBe(7);
    expect(rc.size).toBe(9);
  });

  it('a run of free clusters at the end is extended, not skipped', () => {
    const rc = new RefcountArray(4);
    rc.set(0, 1);
    expect(allocateClusters(rc, 5, { cluster: 0 })).toBe(1);
    expect(rc.size).toBe(6);
  });
});

describe('compressed cluster extents', () => {
  it('counts the sectors from the offset, which may run into the next host cluster', () => {
    // 64 KiB clusters: 62 - (16 - 8) = 54 offset bits, sector count above them.
    const clusterBits = 16;
    const host = 65536 - 100; // 100 bytes before a cluster boundary
    const sectors = 3; // stored as count - 1
    const raw = (1n << 62n) | (BigInt(sectors - 1) << 54n) | BigInt(host);
    const { host: h, length } = compressedExtent(Number(raw >> 32n), Number(raw & 0xffffffffn), clusterBits);
    expect(h).toBe(host);
    expect(length).toBe(3 * 512 - (host % 512));
    expect(Math.floor((h + length - 1) / 65536)).toBe(1); // ends in the next cluster
  });
});

/** An image file in memory that grows on writes past its end. */
function memoryFile(bytes: Uint8Array): Qcow2File & { bytes: () => Buffer } {
  let buf = Buffer.from(bytes);
  return {
    get length() {
      return buf.length;
    },
    async read(offset, b) {
      b.set(buf.subarray(offset, offset + b.length));
    },
    async write(offset, data) {
      if (offset + data.length > buf.length) buf = Buffer.concat([buf, Buffer.alloc(offset + data.length - buf.length)]);
      buf.set(data, offset);
    },
    async flush() {},
    bytes: () => buf,
  };
}

const fixture = (name: string) => fs.readFileSync(path.join(import.meta.dirname, '../fixtures/qcow2', name));

describe('checkQcow2 on an image in memory', () => {
  it('a clean fixture has no findings', async () => {
    const r = await checkQcow2(memoryFile(fixture('v3.qcow2')));
    expect([r.corruptions, r.leaks, r.checkErrors]).toEqual([0, 0, 0]);
    expect(r.allocatedClusters).toBeGreaterThan(0);
  });

  it('a refcount set to 0 on the refcount table itself is repaired by rebuilding the structure, and the dirty bit is cleared', async () => {
    const img = Buffer.from(fixture('v3.qcow2'));
    const cs = 2 ** img.readUInt32BE(20);
    const reftable = Number(img.readBigUInt64BE(48));
    const refblock = Number(img.readBigUInt64BE(reftable));
    img.writeUInt16BE(0, refblock + (reftable / cs) * 2); // refcount_bits=16 in the fixture
    img.writeUInt32BE(img.readUInt32BE(76) | 1, 76); // dirty
    const file = memoryFile(img);
    const found = await checkQcow2(file);
    expect(found.corruptions).toBe(1);
    const fixed = await repairRefcounts(file);
    expect(fixed.corruptionsFixed).toBe(1);
    expect(Number(file.bytes().readBigUInt64BE(48))).not.toBe(reftable); // a new table
    expect(file.bytes().readUInt32BE(76) & 1).toBe(0);
    const again = await checkQcow2(file);
    expect([again.corruptions, again.checkErrors]).toEqual([0, 0]);
    expect(again.leaks).toBe(0);
  });

  it('leaks-only repair refuses to rebuild: the check reports an error instead', async () => {
    const img = Buffer.from(fixture('v3.qcow2'));
    const cs = 2 ** img.readUInt32BE(20);
    const reftable = Number(img.readBigUInt64BE(48));
    const refblock = Number(img.readBigUInt64BE(reftable));
    img.writeUInt16BE(0, refblock + (reftable / cs) * 2);
    const r = await checkQcow2(memoryFile(img), { repair: 'leaks' });
    expect(r.checkErrors).toBe(1);
  });
});
