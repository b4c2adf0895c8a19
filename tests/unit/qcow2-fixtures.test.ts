import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockError } from '../../src/index.js';
import { qcow2Workspace } from '../helpers/qcow2-workspace.js';

const ws = qcow2Workspace('blocklayer-qcow2-unit-');
const { expected, layer, open, hash } = ws;
const patched = ws.patched.bind(ws);

/** Offset of the first L2 table of an image. */
function firstL2(b: Buffer): number {
  const l1 = Number(b.readBigUInt64BE(40));
  return Number(b.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
}

async function openError(name: string): Promise<BlockError> {
  try {
    const d = await open(name);
    await d.read(0, d.length);
    await d.blockStatusMap();
    await d.close();
  } catch (e) {
    expect(e).toBeInstanceOf(BlockError);
    return e as BlockError;
  }
  throw new Error(`${name} opened and read without an error`);
}

describe('qcow2 fixtures (no qemu-utils needed)', () => {
  for (const name of ['v3.qcow2', 'v2.qcow2', 'zlib.qcow2', 'zstd.qcow2', 'base.qcow2', 'over.qcow2', 'snap.qcow2']) {
    it(`${name} reads back the bytes qemu-img convert gave`, async () => {
      const d = await open(name);
      expect(await hash(d)).toBe(expected[name]);
      await d.close();
    });
  }

  for (const name of ['zlib.qcow2', 'zstd.qcow2']) {
    it(`${name}: concurrent reads of compressed clusters (4 KiB each, all at once) give the bytes serial reads give`, async () => {
      const d = await open(name);
      const chunk = 4096;
      const serial = Buffer.concat([await d.read(0, d.length)]);
      const parallel = Buffer.alloc(d.length);
      await Promise.all(Array.from({ length: d.length / chunk }, async (_, i) => parallel.set(await d.read(i * chunk, chunk), i * chunk)));
      expect(parallel.equals(serial)).toBe(true);
      await d.close();
    });
  }

  it('an internal snapshot opens read-only with its own contents', async () => {
    const d = await open('snap.qcow2', { snapshot: 'one' });
    expect(await hash(d)).toBe(expected['snap.qcow2@one']);
    await expect(d.write(0, new Uint8Array(1))).rejects.toMatchObject({ code: 'EROFS' });
    await d.close();
  });

  it('the overlay reads its backing file named relative to its own directory', async () => {
    const d = await open('over.qcow2');
    expect(d.node.child('backing')?.driver.name).toBe('qcow2');
    expect((await d.read(0, 1))[0]).toBe(0x01);
    expect((await d.read(1024, 1))[0]).toBe(0x02);
    // Beyond the 64 KiB backing file the 96 KiB overlay reads zeros.
    expect((await d.read(80 * 1024, 1))[0]).toBe(0);
    await d.close();
  });

  it('backing: null opens the overlay alone', async () => {
    const d = await open('over.qcow2', { backing: null });
    expect(d.node.child('backing')).toBeUndefined();
    expect((await d.read(0, 1))[0]).toBe(0);
    await d.close();
  });

  it('a qcow2 image opens read-write; opened read-only it refuses writes with EROFS', async () => {
    const rw = await open('v3.qcow2', { readOnly: false });
    expect(rw.node.readOnly).toBe(false);
    await rw.close();
    const ro = await open('v3.qcow2', { readOnly: true });
    await expect(ro.write(0, new Uint8Array(1))).rejects.toMatchObject({ code: 'EROFS' });
    await ro.close();
  });

  it('info reports format facts', async () => {
    const d = await open('zstd.qcow2');
    expect(d.node.info()).toMatchObject({ format: 'qcow2', version: 3, clusterSize: 4096, compressionType: 'zstd', virtualSize: 65536 });
    await d.close();
  });
});

describe('hostile qcow2 images are refused with ECORRUPT or ENOTSUP naming the field', () => {
  const cases: [string, string, (b: Buffer) => void, string, RegExp][] = [
    ['bad magic', 'v3.qcow2', (b) => b.writeUInt32BE(0x12345678, 0), 'ECORRUPT', /magic/],
    ['version 4', 'v3.qcow2', (b) => b.writeUInt32BE(4, 4), 'ENOTSUP', /version 4/],
    ['cluster_bits 8', 'v3.qcow2', (b) => b.writeUInt32BE(8, 20), 'ECORRUPT', /cluster_bits 8 is outside 9\.\.21/],
    ['cluster_bits 22', 'v3.qcow2', (b) => b.writeUInt32BE(22, 20), 'ECORRUPT', /cluster_bits 22/],
    ['virtual size above 2^53', 'v3.qcow2', (b) => b.writeBigUInt64BE(2n ** 60n, 24), 'ENOTSUP', /exceeds 2\^53/],
    ['encryption', 'v3.qcow2', (b) => b.writeUInt32BE(1, 32), 'ENOTSUP', /encrypted/],
    ['a huge L1 table', 'v3.qcow2', (b) => b.writeUInt32BE(0x10000000, 36), 'ECORRUPT', /l1_size .* exceed/],
    ['an L1 table too small for the size', 'v3.qcow2', (b) => b.writeUInt32BE(0, 36), 'ECORRUPT', /l1_size 0 is too small/],
    ['an unaligned L1 table', 'v3.qcow2', (b) => b.writeBigUInt64BE(b.readBigUInt64BE(40) + 8n, 40), 'ECORRUPT', /l1_table_offset .* not aligned/],
    ['an L1 table beyond the end of the file', 'v3.qcow2', (b) => b.writeBigUInt64BE(1n << 30n, 40), 'ECORRUPT', /l1_table_offset .* outside the file/],
    ['reserved bits in an L1 entry', 'v3.qcow2', (b) => b.writeUInt8(b[Number(b.readBigUInt64BE(40)) + 7] | 0x02, Number(b.readBigUInt64BE(40)) + 7), 'ECORRUPT', /L1 entry has reserved bits/],
    ['an L2 table beyond the end of the file', 'v3.qcow2', (b) => b.writeBigUInt64BE(1n << 30n, Number(b.readBigUInt64BE(40))), 'ECORRUPT', /L2 table at .* beyond the end/],
    ['reserved bits in an L2 entry', 'v3.qcow2', (b) => b.writeUInt8(b[firstL2(b) + 7] | 0x04, firstL2(b) + 7), 'ECORRUPT', /L2 entry has reserved bits/],
    ['an unaligned data cluster', 'zlib.qcow2', (b) => b.writeBigUInt64BE((1n << 63n) | 4608n + 512n * 3n, firstL2(b)), 'ECORRUPT', /unaligned cluster/],
    ['compressed data outside the file', 'zlib.qcow2', (b) => b.writeBigUInt64BE((1n << 62n) | 0x3fffffffn, firstL2(b)), 'ECORRUPT', /compressed data at .* outside the file/],
    ['garbage compressed data', 'zlib.qcow2', (b) => b.fill(0xff, Number(b.readBigUInt64BE(firstL2(b)) & 0x3fffffffffffffn), Number(b.readBigUInt64BE(firstL2(b)) & 0x3fffffffffffffn) + 64), 'ECORRUPT', /compressed cluster .* is corrupt/],
    ['a zero flag in a version 2 image', 'v2.qcow2', (b) => b.writeUInt8(b[firstL2(b) + 7] | 0x01, firstL2(b) + 7), 'ECORRUPT', /zero flag in a version 2 image/],
    ['a backing name longer than 1023 bytes', 'over.qcow2', (b) => b.writeUInt32BE(2000, 16), 'ECORRUPT', /backing_file_size 2000/],
    ['too many snapshots', 'snap.qcow2', (b) => b.writeUInt32BE(70000, 60), 'ECORRUPT', /nb_snapshots 70000/],
    ['a snapshot table beyond the file', 'snap.qcow2', (b) => b.writeBigUInt64BE(1n << 30n, 64), 'ECORRUPT', /snapshots_offset/],
    ['an unknown incompatible feature', 'v3.qcow2', (b) => b.writeUInt32BE(1 << 5, 76), 'ENOTSUP', /incompatible feature bit 5/],
    ['a short v3 header', 'v3.qcow2', (b) => b.writeUInt32BE(72, 100), 'ECORRUPT', /header_length 72/],
    ['refcount_order 7', 'v3.qcow2', (b) => b.writeUInt32BE(7, 96), 'ECORRUPT', /refcount_order 7/],
    ['a header extension running past the header cluster', 'v3.qcow2', (b) => {
        b.writeUInt32BE(0x12345678, b.readUInt32BE(100));
        b.writeUInt32BE(0xffff, b.readUInt32BE(100) + 4);
      }, 'ECORRUPT', /header extension/],
  ];
  for (const [what, fixture, patch, code, message] of cases) {
    it(`${what}: ${code}`, async () => {
      const e = await openError(patched(fixture, `bad-${what.replace(/\W+/g, '-')}.qcow2`, patch));
      expect(e.code, e.message).toBe(code);
      expect(e.message).toMatch(message);
    });
  }

  it('an image backed by itself is refused at open, not hung on', async () => {
    const name = patched('over.qcow2', 'selfy.qcow2', (b) => {
      const at = Number(b.readBigUInt64BE(8));
      b.write('selfy.qcow2', at);
      b.writeUInt32BE(11, 16);
    });
    const e = await openError(name);
    expect(e.code).toBe('ECORRUPT');
    expect(e.message).toMatch(/backing chain loops/);
  });

  it('a loop A -> B -> A is refused at open', async () => {
    const rename = (target: string) => (b: Buffer) => {
      const at = Number(b.readBigUInt64BE(8));
      b.write(target, at);
      b.writeUInt32BE(target.length, 16);
    };
    patched('over.qcow2', 'loopa.qcow2', rename('loopb.qcow2'));
    patched('over.qcow2', 'loopb.qcow2', rename('loopa.qcow2'));
    const e = await openError('loopa.qcow2');
    expect(e.message).toMatch(/loopa\.qcow2 -> .*loopb\.qcow2 -> .*loopa\.qcow2/);
  });

  it('a missing backing file is ENOENT naming it', async () => {
    const name = patched('over.qcow2', 'orphan.qcow2', (b) => b.write('nope', Number(b.readBigUInt64BE(8))));
    const e = await openError(name);
    expect(e.code).toBe('ENOENT');
    expect(e.message).toMatch(/nope/);
  });
});

describe('random corruption (property)', () => {
  it('random byte mutations of small images give correct reads or BlockErrors, never other exceptions or hangs', async () => {
    const sources = ['v3.qcow2', 'v2.qcow2', 'zlib.qcow2', 'zstd.qcow2', 'snap.qcow2'];
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...sources),
        fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }), region: fc.constantFrom('header', 'any') }), { minLength: 1, maxLength: 8 }),
        async (fixture, mutations) => {
          const name = patched(fixture, `mut-${n++}.qcow2`, (b) => {
            for (const m of mutations) b[m.region === 'header' ? m.at % 512 : m.at % b.length] = m.value;
          });
          try {
            const d = await open(name, { backing: null });
            await d.read(0, Math.min(d.length, 1 << 20));
            await d.blockStatusMap(0, Math.min(d.length, 1 << 20));
            await d.close();
          } catch (e) {
            if (!(e instanceof BlockError)) throw e;
          } finally {
            fs.rmSync(path.join(ws.dir, name));
          }
        },
      ),
      { numRuns: Number(process.env.PROP_RUNS ?? 300) },
    );
  });
});

describe('openImage', () => {
  it('probes the format of a path and opens it as a drive', async () => {
    const { openImage } = await import('../../src/index.js');
    const d = await openImage(path.join(ws.dir, 'zlib.qcow2'), { id: 'img', throttle: { iopsRead: 1000 } }, layer);
    expect(d.node.driver.name).toBe('qcow2');
    expect(await hash(d)).toBe(expected['zlib.qcow2']);
    expect(d.getLimits()).toEqual({ iopsRead: 1000, group: 'img' });
    await d.close();
    const raw = path.join(ws.dir, 'plain.raw');
    fs.writeFileSync(raw, Buffer.alloc(4096, 7));
    const r = await openImage(raw, {}, layer);
    expect(r.node.driver.name).toBe('raw');
    await r.write(0, new Uint8Array([1]));
    await r.close();
    expect(fs.readFileSync(raw)[0]).toBe(1);
  });
});

describe('qcow2 header variants (patched fixtures)', () => {
  it('a 104-byte v3 header (no compression type byte, QEMU < 5.1) reads the same', async () => {
    const name = patched('v3.qcow2', 'h104.qcow2', (b) => {
      expect(b.readUInt32BE(100)).toBe(112);
      b.copy(b, 104, 112, 512);
      b.writeUInt32BE(104, 100);
    });
    const d = await open(name);
    expect(await hash(d)).toBe(expected['v3.qcow2']);
    await d.close();
  });

  it('the dirty bit, unknown compatible and autoclear bits are readable', async () => {
    const name = patched('v3.qcow2', 'bits.qcow2', (b) => {
      b.writeUInt32BE(b.readUInt32BE(76) | 1, 76); // dirty
      b.writeUInt32BE(1 << 9, 84); // unknown compatible bit
      b.writeUInt32BE(1 << 7, 92); // unknown autoclear bit
    });
    const d = await open(name, { readOnly: true });
    expect(await hash(d)).toBe(expected['v3.qcow2']);
    expect(d.node.info()).toMatchObject({ dirty: true });
    await d.close();
    // Read-write, a dirty image is repaired first (QEMU does the same on open): the bit is cleared.
    const rw = await open(name);
    expect(rw.node.info()).toMatchObject({ dirty: false });
    expect(await hash(rw)).toBe(expected['v3.qcow2']);
    await rw.close();
  });

  it('a file that ends inside its last cluster reads zeros past the end, as QEMU does', async () => {
    const full = fs.readFileSync(path.join(import.meta.dirname, '../fixtures/qcow2', 'v3.qcow2'));
    const d0 = await open('v3.qcow2');
    const map = await d0.blockStatusMap();
    const last = map.find((e) => e.hostOffset !== undefined && e.data && e.hostOffset + e.length === full.length);
    expect(last).toBeDefined();
    const before = Buffer.from(await d0.read(0, d0.length));
    await d0.close();
    const cut = 200;
    const name = patched('v3.qcow2', 'short.qcow2', () => undefined);
    fs.truncateSync(path.join(ws.dir, name), full.length - cut);
    const d = await open(name);
    const after = Buffer.from(await d.read(0, d.length));
    const zeroFrom = last!.offset + last!.length - cut;
    before.fill(0, zeroFrom, last!.offset + last!.length);
    expect(after.equals(before)).toBe(true);
    await d.close();
  });
});

describe('qcow2 L2 cache', () => {
  it('l2CacheSize bounds the number of cached L2 tables and reads stay correct', async () => {
    const small = await open('v2.qcow2', { l2CacheSize: 512 });
    expect(small.node.info().l2CacheEntries).toBe(2);
    expect(await hash(small)).toBe(expected['v2.qcow2']);
    // Read backwards in small pieces so tables are evicted and reloaded.
    for (let o = small.length - 4096; o >= 0; o -= 4096) await small.read(o, 4096);
    expect(await hash(small)).toBe(expected['v2.qcow2']);
    await small.close();
    const big = await open('v2.qcow2', { l2CacheSize: '1M' });
    expect(big.node.info().l2CacheEntries).toBe(2048);
    await big.close();
  });
});
