import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { imageSuite } from '../helpers/image-suite.js';
import { driveHash, haveQemuTools, ourMap, qemuImg, qemuIo, referenceHash, referenceMap } from '../helpers/qemu-images.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('qcow2 qemu-img comparisons skipped: install qemu-utils (apt-get install qemu-utils) to run them');

const suite = imageSuite('blocklayer-qcow2-');
const { p, layer } = suite;

/** Opens an image through our qcow2 driver and checks content and map against qemu-img. */
async function compare(image: string, opts: { snapshot?: string; map?: boolean } = {}) {
  const d = await layer.openDrive({
    driver: 'qcow2',
    readOnly: true,
    file: { driver: 'file', filename: image },
    ...(opts.snapshot ? { snapshot: opts.snapshot } : {}),
  });
  try {
    expect(await driveHash(d)).toBe(referenceHash(image, p('ref.raw'), opts.snapshot));
    if (opts.map !== false && !opts.snapshot) expect(await ourMap(d)).toEqual(referenceMap(image));
  } finally {
    await d.close();
  }
}

const WRITES = [
  'write -P 0xab 0 64k',
  'write -P 0x11 100k 3k',
  'write -z 256k 128k',
  'write -P 0x22 1M 512k',
  'discard 1152k 64k',
  'write -P 0x33 2047k 1k',
];

describe.skipIf(!available)('qcow2 images made by qemu-img read back byte-identical', () => {
  for (const cs of ['512', '4k', '64k', '2M']) {
    it(`v3 image with ${cs} clusters: data, zero clusters, discards, partial clusters`, async () => {
      const img = p(`v3-${cs}.qcow2`);
      qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cs}`, img, '3M');
      qemuIo(img, WRITES);
      await compare(img);
    });
  }

  it('v2 (compat=0.10) image', async () => {
    const img = p('v2.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', img, '3M');
    qemuIo(img, WRITES);
    await compare(img);
  });

  it('deflate-compressed image (qemu-img convert -c), including an uncompressible cluster', async () => {
    const src = p('src.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', src, '4M');
    qemuIo(src, [...WRITES, 'write -P 0x77 3M 64k']);
    fs.writeFileSync(p('random.bin'), Buffer.from(Array.from({ length: 65536 }, () => Math.floor(Math.random() * 256))));
    qemuIo(src, [`write -P 0x44 2M 64k`]);
    const img = p('zlib.qcow2');
    qemuImg('convert', '-q', '-c', '-O', 'qcow2', src, img);
    await compare(img);
  });

  it('zstd-compressed image (compression_type=zstd)', async () => {
    const src = p('src-z.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', src, '4M');
    qemuIo(src, WRITES);
    const img = p('zstd.qcow2');
    qemuImg('convert', '-q', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', src, img);
    await compare(img);
  });

  it('compressed clusters at every cluster size (sector-count field widths)', async () => {
    for (const cs of ['512', '4k', '2M']) {
      const src = p(`src-c${cs}.qcow2`);
      qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cs}`, src, '3M');
      qemuIo(src, ['write -P 0x5a 0 1M', 'write -P 0x6b 2M 100k']);
      const img = p(`c${cs}.qcow2`);
      qemuImg('convert', '-q', '-c', '-O', 'qcow2', '-o', `cluster_size=${cs}`, src, img);
      await compare(img);
    }
  });

  it('backing chain qcow2 -> qcow2 -> raw with relative names; overlay larger than its backing', async () => {
    const base = p('base.raw');
    qemuImg('create', '-q', '-f', 'raw', base, '1M');
    qemuIo(base, ['write -P 0x01 0 512k'], 'raw');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', p('mid.qcow2'), '2M');
    qemuIo(p('mid.qcow2'), ['write -P 0x02 256k 128k', 'write -z 600k 64k']);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', p('top.qcow2'), '3M');
    qemuIo(p('top.qcow2'), ['write -P 0x03 300k 10k', 'write -P 0x04 2500k 4k']);
    await compare(p('top.qcow2'));
  });

  it('a backing format missing from the header is probed (qcow2 or raw)', async () => {
    qemuImg('create', '-q', '-f', 'qcow2', p('b0.qcow2'), '1M');
    qemuIo(p('b0.qcow2'), ['write -P 0x09 0 100k']);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'b0.qcow2', '-F', 'qcow2', p('noformat.qcow2'), '1M');
    // qemu-img 7.2 insists on a backing format; blank the extension's type so it reads as unknown.
    const img = fs.readFileSync(p('noformat.qcow2'));
    const ext = img.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca]));
    expect(ext).toBeGreaterThan(0);
    img.writeUInt32BE(0x0badcafe, ext);
    fs.writeFileSync(p('noformat.qcow2'), img);
    const d = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: p('noformat.qcow2') } });
    expect((await d.read(0, 1))[0]).toBe(0x09);
    expect(d.node.child('backing')?.driver.name).toBe('qcow2');
    await d.close();
  });

  it('an overlay shorter than its backing reads only its own size', async () => {
    qemuImg('create', '-q', '-f', 'qcow2', p('big.qcow2'), '4M');
    qemuIo(p('big.qcow2'), ['write -P 0x0a 0 4M']);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'big.qcow2', '-F', 'qcow2', p('short.qcow2'), '1M');
    await compare(p('short.qcow2'));
  });

  it('extended L2 entries (subclusters) with partial writes over a backing file', async () => {
    qemuImg('create', '-q', '-f', 'qcow2', p('sub-base.qcow2'), '2M');
    qemuIo(p('sub-base.qcow2'), ['write -P 0x10 0 2M']);
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=64k', '-b', 'sub-base.qcow2', '-F', 'qcow2', p('sub.qcow2'), '2M');
    qemuIo(p('sub.qcow2'), ['write -P 0x20 0 2k', 'write -P 0x21 6k 2k', 'write -z 64k 4k', 'write -P 0x22 130k 7k', 'discard 512k 64k']);
    await compare(p('sub.qcow2'));
  });

  it('external data file, with and without data_file_raw', async () => {
    for (const raw of ['off', 'on']) {
      const img = p(`ext-${raw}.qcow2`);
      qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=ext-${raw}.data,data_file_raw=${raw}`, img, '2M');
      qemuIo(img, ['write -P 0x31 0 100k', 'write -z 512k 64k', 'write -P 0x32 1M 64k']);
      await compare(img);
    }
  });

  it('internal snapshots: list them and open each one read-only', async () => {
    const img = p('snap.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '2M');
    qemuIo(img, ['write -P 0x41 0 64k']);
    qemuImg('snapshot', '-c', 'first', img);
    qemuIo(img, ['write -P 0x42 0 32k', 'write -P 0x43 1M 64k']);
    qemuImg('snapshot', '-c', 'second', img);
    qemuIo(img, ['write -z 0 64k']);
    const d = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: img } });
    const snaps = d.node.info().snapshots as { id: string; name: string; size: number }[];
    expect(snaps.map((s) => [s.id, s.name, s.size])).toEqual([
      ['1', 'first', 2 * 1024 * 1024],
      ['2', 'second', 2 * 1024 * 1024],
    ]);
    await d.close();
    await compare(img);
    await compare(img, { snapshot: 'first' });
    await compare(img, { snapshot: 'second' });
    const byId = await layer.openDrive({ driver: 'qcow2', snapshot: '1', file: { driver: 'file', filename: img } });
    expect((await byId.read(0, 1))[0]).toBe(0x41);
    await byId.close();
    await expect(layer.openDrive({ driver: 'qcow2', snapshot: 'nope', file: { driver: 'file', filename: img } })).rejects.toThrow(/no snapshot with id or name 'nope'/);
  });

  it('preallocation=metadata, lazy refcounts, refcount_bits 1 and 64, a dirty image', async () => {
    for (const o of ['preallocation=metadata', 'lazy_refcounts=on', 'refcount_bits=1', 'refcount_bits=64']) {
      const img = p(`opt-${o.replace(/\W/g, '_')}.qcow2`);
      qemuImg('create', '-q', '-f', 'qcow2', '-o', o, img, '2M');
      qemuIo(img, ['write -P 0x51 64k 64k', 'write -z 128k 64k']);
      await compare(img);
    }
  });

  it('data clusters at host offsets beyond 2 GiB and 4 GiB', async () => {
    const img = p('far.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', img, '5G');
    qemuIo(img, ['write -P 0x71 0 64k', 'write -P 0x72 2560M 64k', 'write -P 0x73 4500M 64k']);
    // Read-only: qemu-img map runs beside it, and QEMU's locks let readers share an image.
    const d = await layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: img } });
    expect((await d.read(2560 * 2 ** 20, 1))[0]).toBe(0x72);
    expect((await d.read(4500 * 2 ** 20 + 65535, 1))[0]).toBe(0x73);
    const s = await d.blockStatus(4500 * 2 ** 20, 65536);
    expect(s.hostOffset).toBeGreaterThan(2 ** 32);
    expect(await ourMap(d)).toEqual(referenceMap(img));
    await d.close();
  });

  it('a 1 TiB sparse image maps like qemu-img and reads its data', async () => {
    const img = p('huge.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '1T');
    qemuIo(img, ['write -P 0x61 0 64k', 'write -P 0x62 549755813888 4k', 'write -P 0x63 1099511562240 64k']);
    const d = await layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: img } });
    expect(d.length).toBe(2 ** 40);
    expect(await ourMap(d)).toEqual(referenceMap(img));
    expect((await d.read(549755813888, 2))[1]).toBe(0x62);
    expect((await d.read(2 ** 40 - 1, 1))[0]).toBe(0x63);
    await d.close();
  });
});
