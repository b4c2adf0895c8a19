/**
 * QEMU's open-time rules on the checked-in fixtures (512-byte clusters), without qemu-utils.
 * tests/integration/qcow2-refusals.test.ts checks the same rules against qemu-img itself.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BlockError } from '../../src/index.js';
import { qcow2Workspace } from '../helpers/qcow2-workspace.js';

const ws = qcow2Workspace('blocklayer-qcow2-refuse-unit-');
const { expected, open, hash } = ws;
const patched = ws.patched.bind(ws);

async function refusal(name: string, extra: Record<string, unknown> = {}): Promise<BlockError> {
  const e = await open(name, extra).then(
    async (d) => {
      await d.close();
      throw new Error(`${name} opened`);
    },
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(BlockError);
  return e as BlockError;
}

/** Writes a header extension at `at` (the fixtures' end marker is at 112). */
function ext(b: Buffer, at: number, type: number, data: Buffer | number) {
  const bytes = typeof data === 'number' ? Buffer.alloc(data) : data;
  b.writeUInt32BE(type, at);
  b.writeUInt32BE(bytes.length, at + 4);
  bytes.copy(b, at + 8);
  b.writeBigUInt64BE(0n, at + 8 + Math.ceil(bytes.length / 8) * 8);
}

const bitmapsExt = (nb: number) => {
  const d = Buffer.alloc(24);
  d.writeUInt32BE(nb, 0);
  d.writeBigUInt64BE(1024n, 8);
  d.writeBigUInt64BE(1n << 20n, 16); // beyond the end of the file: reads as zeros
  return d;
};

describe('qcow2 header rules of QEMU (fixtures)', () => {
  const cases: [string, string, (b: Buffer) => void, string, RegExp][] = [
    ['the compression type bit with compression_type zlib', 'v3.qcow2', (b) => b.writeUInt32BE(8, 76), 'ECORRUPT', /compression type bit \(3\) set but compression_type is zlib/],
    [
      'the compression type bit in a 104-byte header',
      'v3.qcow2',
      (b) => {
        b.writeUInt32BE(8, 76);
        b.copy(b, 104, 112, 512);
        b.writeUInt32BE(104, 100);
      },
      'ECORRUPT',
      /compression type bit/,
    ],
    ['a refcount table of 0 clusters', 'v3.qcow2', (b) => b.writeUInt32BE(0, 56), 'ECORRUPT', /refcount_table_clusters is 0/],
    ['an unaligned snapshot table offset with no snapshots', 'v3.qcow2', (b) => b.writeBigUInt64BE(520n, 64), 'ECORRUPT', /snapshots_offset 520 is not aligned/],
    [
      'an unaligned offset of an empty L1 table',
      'v3.qcow2',
      (b) => {
        b.writeBigUInt64BE(0n, 24);
        b.writeUInt32BE(0, 36);
        b.writeBigUInt64BE(1544n, 40);
      },
      'ECORRUPT',
      /l1_table_offset 1544 is not aligned/,
    ],
    ['data_file_raw without an external data file', 'v3.qcow2', (b) => b.writeUInt32BE(2, 92), 'ECORRUPT', /data_file_raw \(bit 1\) set but the image has no external data file/],
    ['an end marker whose length runs into the backing file name', 'over.qcow2', (b) => b.writeUInt32BE(8, 132), 'ECORRUPT', /header extension of 8 bytes runs past the end of the extension area \(byte 136\)/],
    ['a backing format extension of 16 bytes', 'v3.qcow2', (b) => ext(b, 112, 0xe2792aca, Buffer.from('qcow2qcow2qcow2q')), 'ECORRUPT', /backing format extension of 16 bytes/],
    ['a crypto header extension without LUKS', 'v3.qcow2', (b) => ext(b, 112, 0x0537be77, 16), 'ECORRUPT', /crypto header extension .*LUKS/],
    ['a bitmaps extension of 16 bytes', 'v3.qcow2', (b) => ext(b, 112, 0x23852875, 16), 'ECORRUPT', /bitmaps extension length 16 is not 24/],
    [
      'a bitmaps extension with 0 bitmaps and the autoclear bit',
      'v3.qcow2',
      (b) => {
        ext(b, 112, 0x23852875, bitmapsExt(0));
        b.writeUInt32BE(1, 92);
      },
      'ECORRUPT',
      /nb_bitmaps is 0/,
    ],
    [
      'a bitmap directory of zeros',
      'v3.qcow2',
      (b) => {
        ext(b, 112, 0x23852875, bitmapsExt(1));
        b.writeUInt32BE(1, 92);
      },
      'ECORRUPT',
      /bitmap '' .*empty bitmap table/,
    ],
  ];
  for (const [what, fixture, patch, code, message] of cases) {
    it(`refused: ${what}`, async () => {
      const e = await refusal(patched(fixture, `r-${what.replace(/\W+/g, '-')}.qcow2`, patch));
      expect(e.code, e.message).toBe(code);
      expect(e.message).toMatch(message);
    });
  }

  it('opens: a bitmaps extension without the bitmaps autoclear bit is ignored', async () => {
    const d = await open(patched('v3.qcow2', 'bm-ignored.qcow2', (b) => ext(b, 112, 0x23852875, bitmapsExt(0))));
    expect(await hash(d)).toBe(expected['v3.qcow2']);
    expect(d.node.info().bitmaps).toEqual([]);
    await d.close();
  });

  it('a virtual size that is not a multiple of 512 is rounded down', async () => {
    const full = await open('v3.qcow2');
    const head = await full.read(0, 65024);
    await full.close();
    const d = await open(patched('v3.qcow2', 'odd.qcow2', (b) => b.writeBigUInt64BE(65436n, 24)));
    expect(d.length).toBe(65024);
    expect(Buffer.from(await d.read(0, d.length)).equals(Buffer.from(head))).toBe(true);
    await d.close();
  });

  it('a backing file name of 0 bytes means no backing file', async () => {
    const d = await open(patched('over.qcow2', 'no-name.qcow2', (b) => b.writeUInt32BE(0, 16)));
    expect(d.node.child('backing')).toBeUndefined();
    const alone = await open('over.qcow2', { backing: null });
    expect(await hash(d)).toBe(await hash(alone));
    await d.close();
    await alone.close();
  });

  it('a data-file child for an image without an external data file is refused', async () => {
    const e = await refusal('v3.qcow2', { 'data-file': { driver: 'file', filename: path.join(ws.dir, 'v2.qcow2') } });
    expect(e).toMatchObject({ code: 'EINVAL', field: 'data-file' });
  });
});

describe('qcow2 snapshot entries are checked when the snapshot is opened (fixtures)', () => {
  it('an unaligned snapshot L1 table: the active layer reads; the snapshot is refused', async () => {
    const name = patched('snap.qcow2', 'sn-unaligned.qcow2', (b) => b.writeBigUInt64BE(b.readBigUInt64BE(5120) + 8n, 5120));
    const d = await open(name);
    expect(await hash(d)).toBe(expected['snap.qcow2']);
    await d.close();
    const e = await refusal(name, { snapshot: 'one' });
    expect(e.code).toBe('ECORRUPT');
    expect(e).toMatchObject({ field: 'l1_table_offset', offset: 5120 });
    expect(e.message).toMatch(/of snapshot 'one' is not aligned/);
  });

  it('a snapshot L1 table above 32 MiB: the active layer reads; the snapshot is refused', async () => {
    const name = patched('snap.qcow2', 'sn-huge.qcow2', (b) => b.writeUInt32BE(0x400001, 5128));
    const d = await open(name);
    expect(await hash(d)).toBe(expected['snap.qcow2']);
    await d.close();
    const e = await refusal(name, { snapshot: 'one' });
    expect(e).toMatchObject({ code: 'ECORRUPT', field: 'l1_size', offset: 5128 });
  });

  it('a snapshot L1 table beyond the end of the file reads as zeros', async () => {
    const d = await open(patched('snap.qcow2', 'sn-far.qcow2', (b) => b.writeBigUInt64BE(1n << 30n, 5120)), { snapshot: 'one' });
    expect(Buffer.from(await d.read(0, d.length)).equals(Buffer.alloc(d.length))).toBe(true);
    await d.close();
  });

  it('a snapshot is read with the current virtual size, not its own disk size', async () => {
    const d = await open(patched('snap.qcow2', 'sn-big.qcow2', (b) => b.writeBigUInt64BE(1n << 40n, 5120 + 48)), { snapshot: 'one' });
    expect(d.length).toBe(65536);
    expect(await hash(d)).toBe(expected['snap.qcow2@one']);
    await d.close();
  });
});
