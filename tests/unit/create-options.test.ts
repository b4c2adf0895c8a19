import { describe, expect, it } from 'vitest';
import { parseCreateO } from '../../src/cli/create.js';
import { parseCreateOptions, qcow2Settings } from '../../src/options/create.js';
import { planQcow2 } from '../../src/drivers/qcow2/create-layout.js';
import { parseHeader } from '../../src/drivers/qcow2/header.js';
import { BlockError, BlockLayer, createQcow2OnNode } from '../../src/index.js';
import { existingNodeDriver } from '../helpers/existing-node-driver.js';
import { rejection } from '../helpers/rejection.js';

const BAD: [string, Record<string, unknown>, string][] = [
  ['cluster size not a power of two', { clusterSize: 1000 }, 'clusterSize'],
  ['cluster size above 2 MiB', { clusterSize: '4M' }, 'clusterSize'],
  ['cluster size below 512', { clusterSize: 256 }, 'clusterSize'],
  ['refcount bits not a power of two', { refcountBits: 3 }, 'refcountBits'],
  ['refcount bits above 64', { refcountBits: 128 }, 'refcountBits'],
  ['refcount bits other than 16 with compat 0.10', { compat: '0.10', refcountBits: 1 }, 'refcountBits'],
  ['lazy refcounts with compat 0.10', { compat: '0.10', lazyRefcounts: true }, 'lazyRefcounts'],
  ['extended L2 with 8 KiB clusters', { extendedL2: true, clusterSize: 8192 }, 'extendedL2'],
  ['extended L2 with compat v2', { extendedL2: true, compat: 'v2' }, 'extendedL2'],
  ['zstd with compat 0.10', { compressionType: 'zstd', compat: '0.10' }, 'compressionType'],
  ['a data file with compat 0.10', { dataFile: 'd.raw', compat: '0.10' }, 'dataFile'],
  ['data file raw without a data file', { dataFileRaw: true }, 'dataFileRaw'],
  ['an unknown compat level', { compat: '2.0' }, 'compat'],
  ['an unknown compression type', { compressionType: 'lz4' }, 'compressionType'],
  ['an unknown preallocation mode', { preallocation: 'sparse' }, 'preallocation'],
  ['a negative size', { size: -512 }, 'size'],
  ['no size and no backing file', { size: undefined }, 'size'],
  ['an unknown option', { clusterBits: 16 }, 'clusterBits'],
];

describe('create options: qemu-img create rules, EINVAL naming the field', () => {
  for (const [what, opts, field] of BAD) {
    it(`refuses ${what}`, async () => {
      const layer = new BlockLayer();
      try {
        const node = await layer.openNode({ driver: 'memory', size: '16M' });
        const e = await rejection(createQcow2OnNode(node, { size: '1M', ...opts } as never));
        expect(e).toBeInstanceOf(BlockError);
        expect(e).toMatchObject({ code: 'EINVAL', field });
        expect((e as Error).message).toContain(field);
        // nothing was written
        expect((await node.blockStatus(0, node.length)).allocated).toBe(false);
      } finally {
        await layer.close();
      }
    });
  }

  it('refuses qcow2 options for raw, data-file-raw with a backing file, and preallocation with a backing file without extended L2', () => {
    expect(() => parseCreateOptions({ format: 'raw', size: 512, clusterSize: 4096 })).toThrow(/clusterSize: is a qcow2 option/);
    expect(() => parseCreateOptions({ format: 'qcow2', backing: 'b', dataFile: 'd', dataFileRaw: true })).toThrow(/dataFileRaw: cannot be used with a backing file/);
    expect(() => parseCreateOptions({ format: 'qcow2', backing: 'b', preallocation: 'metadata' })).toThrow(/preallocation: with a backing file needs extendedL2/);
    expect(() => parseCreateOptions({ format: 'qcow2', backing: 'b', preallocation: 'metadata', extendedL2: true })).not.toThrow();
  });

  it('accepts compat spelled v2/v3 and rounds the size up to sectors as qemu-img does', () => {
    const o = parseCreateOptions({ format: 'qcow2', size: 1000, compat: 'v2' });
    expect(qcow2Settings(o, 1000)).toMatchObject({ version: 2, size: 1024, clusterBits: 16, refcountOrder: 4 });
    expect(qcow2Settings(parseCreateOptions({ format: 'qcow2', size: '1G', compat: 'v3' }), 2 ** 30).version).toBe(3);
  });

  it('data-file-raw implies metadata preallocation, as in QEMU', () => {
    const o = parseCreateOptions({ format: 'qcow2', size: '1M', dataFile: 'd.raw', dataFileRaw: true });
    expect(qcow2Settings(o, 2 ** 20).preallocation).toBe('metadata');
  });

  it('refuses a size whose L1 table would exceed 32 MiB', () => {
    const o = parseCreateOptions({ format: 'qcow2', size: 2 ** 50, clusterSize: 512 });
    expect(() => planQcow2(qcow2Settings(o, 2 ** 50))).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'size' }));
  });
});

describe('qcow2 layout', () => {
  it('lays out header, refcount table, refcount block and L1 as qemu-img does (64 KiB clusters, 1 GiB)', () => {
    const plan = planQcow2(qcow2Settings(parseCreateOptions({ format: 'qcow2', size: '1G' }), 2 ** 30));
    expect(plan.fileLength).toBe(0x30010);
    const header = new Uint8Array(65536);
    header.set(plan.writes[0].data);
    const h = parseHeader(header, plan.fileLength);
    expect(h).toMatchObject({ version: 3, clusterSize: 65536, size: 2 ** 30, l1Size: 2, l1TableOffset: 0x30000, refcountTableOffset: 0x10000, refcountTableClusters: 1, refcountOrder: 4, headerLength: 112 });
    expect([...h.featureNames.values()]).toContain('extended L2 entries');
  });

  it('writes the header extensions for backing format, data file, compression and extended L2', () => {
    const o = parseCreateOptions({ format: 'qcow2', size: '1M', backing: 'base.qcow2', backingFormat: 'qcow2', compressionType: 'zstd', extendedL2: true, lazyRefcounts: true, refcountBits: 64 });
    const plan = planQcow2(qcow2Settings(o, 2 ** 20));
    const h = parseHeader(plan.writes[0].data, plan.fileLength);
    expect(h).toMatchObject({ backingFile: 'base.qcow2', backingFormat: 'qcow2', compressionType: 'zstd', extendedL2: true, compatible: 1, refcountOrder: 6 });
    const d = planQcow2(qcow2Settings(parseCreateOptions({ format: 'qcow2', size: '1M', dataFile: 'x.raw', dataFileRaw: true }), 2 ** 20));
    const hd = parseHeader(d.writes[0].data, d.fileLength);
    expect(hd).toMatchObject({ dataFile: 'x.raw', hasDataFile: true, autoclear: 2 });
    expect(d.dataFileLength).toBe(2 ** 20);
  });
});

describe('createQcow2OnNode', () => {
  it('makes a qcow2 on a memory node that our qcow2 driver opens and reads as zeros', async () => {
    const layer = new BlockLayer();
    try {
      const mem = await layer.openNode({ driver: 'memory', size: '16M' });
      // garbage first: the new image must not show it
      await mem.write(0, new Uint8Array(16 << 20).fill(0xee));
      const made = await createQcow2OnNode(mem, { size: '8M', preallocation: 'metadata', clusterSize: '64k' });
      expect(made).toMatchObject({ format: 'qcow2', virtualSize: 8 << 20 });
      expect(made.fileLength).toBeGreaterThan(0);
      layer.registerDriver(existingNodeDriver(mem));
      const img = await layer.openNode({ driver: 'qcow2', file: { driver: 'existing' } });
      expect(img.length).toBe(8 << 20);
      expect(img.info()).toMatchObject({ compat: '1.1', clusterSize: 65536, refcountBits: 16 });
      const buf = new Uint8Array(8 << 20);
      await img.read(0, buf);
      expect(buf.every((b) => b === 0)).toBe(true);
      // metadata preallocation: every cluster is allocated data (which reads as zeros)
      expect((await img.blockStatus(0, img.length)).allocated).toBe(true);
      await img.unref();
    } finally {
      await layer.close();
    }
  });

  it('refuses a node too small for the layout (ENOSPC) and falloc on a node (ENOTSUP)', async () => {
    const layer = new BlockLayer();
    try {
      const mem = await layer.openNode({ driver: 'memory', size: 65536 });
      expect(await rejection(createQcow2OnNode(mem, { size: '1G' }))).toMatchObject({ code: 'ENOSPC' });
      const big = await layer.openNode({ driver: 'memory', size: '64M' });
      expect(await rejection(createQcow2OnNode(big, { size: '1M', preallocation: 'falloc' }))).toMatchObject({ code: 'ENOTSUP', field: 'preallocation' });
    } finally {
      await layer.close();
    }
  });
});

describe('blocklayer create -o', () => {
  it("maps qemu-img's option names", () => {
    expect(parseCreateO(['cluster_size=4k,compat=0.10', 'lazy_refcounts=on,refcount_bits=64,extended_l2=off,compression_type=zstd,data_file=d,data_file_raw=on,preallocation=full,backing_file=b,backing_fmt=raw,size=1M'])).toEqual({
      clusterSize: 4096,
      compat: '0.10',
      lazyRefcounts: true,
      refcountBits: 64,
      extendedL2: false,
      compressionType: 'zstd',
      dataFile: 'd',
      dataFileRaw: true,
      preallocation: 'full',
      backing: 'b',
      backingFormat: 'raw',
      size: 2 ** 20,
    });
    expect(() => parseCreateO(['bogus=1'])).toThrow(/invalid parameter 'bogus'/);
    expect(() => parseCreateO(['lazy_refcounts=maybe'])).toThrow(/lazy_refcounts: 'maybe' is not on or off/);
    expect(() => parseCreateO(['cluster_size=lots'])).toThrow(/cluster_size/);
  });
});
