import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { vdiDriver } from '../../src/drivers/vdi/index.js';
import { BlockError, checkImage, imageMap } from '../../src/index.js';
import { imageSuite } from '../helpers/image-suite.js';
import { haveQemuTools, ourMap, qemuImg, qemuIo } from '../helpers/qemu-images.js';

const creator = vdiDriver.create!;

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('vdi tests skipped: install qemu-utils (apt-get install qemu-utils) to run them');

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const suite = imageSuite('blocklayer-vdi-');
const { p, layer } = suite;

const openVdi = (filename: string, readOnly = false) => layer.openDrive({ driver: 'vdi', readOnly, file: { driver: 'file', filename, readOnly } });
const qemuMap = (image: string) => JSON.parse(qemuImg('map', '--output=json', '-f', 'vdi', image)) as Record<string, unknown>[];
const virtualSize = (image: string) => (JSON.parse(qemuImg('info', '--output=json', '-f', 'vdi', image)) as { 'virtual-size': number })['virtual-size'];

/** qemu-img check -f vdi: its exit code and output (0: clean). */
function check(image: string): { code: number | null; out: string } {
  const r = spawnSync('qemu-img', ['check', '-f', 'vdi', image], { encoding: 'utf8', cwd: suite.dir });
  return { code: r.status, out: r.stdout + r.stderr };
}
/** The guest content according to qemu-img convert -O raw. */
function qemuContent(image: string): Buffer {
  qemuImg('convert', '-f', 'vdi', '-O', 'raw', image, p('ref.raw'));
  const b = fs.readFileSync(p('ref.raw'));
  fs.rmSync(p('ref.raw'));
  return b;
}
/** A small deterministic PRNG (xorshift32), so a failure replays. */
function prng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}

describe.skipIf(!available)('vdi: images qemu-img made, read through our driver', () => {
  const scattered = ['write -P 0x11 0 4k', 'write -P 0x22 1536k 100k', 'write -P 0x33 2044k 8k', 'write -P 0x44 4607k 1k'];
  const cases: { name: string; o: string; size: string; writes: string[] }[] = [
    { name: 'dynamic', o: 'static=off', size: '5M', writes: scattered },
    { name: 'static', o: 'static=on', size: '5M', writes: scattered },
    { name: 'odd size', o: 'static=off', size: '1000', writes: ['write -P 0x55 512 512'] },
    { name: 'one block, unwritten', o: 'static=off', size: '1M', writes: [] },
  ];
  for (const c of cases) {
    it(`${c.name}: byte-identical to qemu-img convert, same size and map`, async () => {
      const image = p(`${c.name.replace(/\W/g, '-')}.vdi`);
      qemuImg('create', '-q', '-f', 'vdi', '-o', c.o, image, c.size);
      if (c.writes.length > 0) qemuIo(image, c.writes, 'vdi');
      const d = await openVdi(image, true);
      try {
        expect(d.length).toBe(virtualSize(image));
        expect(Buffer.from(await d.read(0, d.length)).equals(qemuContent(image))).toBe(true);
        expect(await ourMap(d)).toEqual(qemuMap(image));
      } finally {
        await d.close();
      }
    });
  }

  it('a 5 GiB image with data past 4 GiB: the same map as qemu-img, the same bytes where data is', async () => {
    const image = p('big.vdi');
    qemuImg('create', '-q', '-f', 'vdi', image, '5G');
    qemuIo(image, ['write -P 0x66 4294967296 64k', 'write -P 0x77 5368705024 4k', 'write -P 0x88 100k 3000'], 'vdi');
    qemuImg('convert', '-f', 'vdi', '-O', 'raw', image, p('big.raw'));
    const d = await openVdi(image, true);
    const raw = fs.openSync(p('big.raw'), 'r');
    try {
      expect(d.length).toBe(5 * GiB);
      expect(await ourMap(d)).toEqual(qemuMap(image));
      for (const [start, length] of [
        [0, MiB],
        [4 * GiB - 4096, MiB + 8192],
        [5 * GiB - MiB, MiB],
      ]) {
        const want = Buffer.alloc(length);
        fs.readSync(raw, want, 0, length, start);
        expect(Buffer.from(await d.read(start, length)).equals(want)).toBe(true);
      }
      expect((await imageMap(image)).filter((e) => e.data).map((e) => e.start)).toEqual([0, 4 * GiB, 5 * GiB - MiB]);
    } finally {
      fs.closeSync(raw);
      fs.rmSync(p('big.raw'));
      await d.close();
    }
  });

  it('probes as vdi (driver auto), and raw data never as vdi', async () => {
    const image = p('probe.vdi');
    qemuImg('create', '-q', '-f', 'vdi', image, '1M');
    const node = await layer.openNode({ driver: 'auto', readOnly: true, file: { driver: 'file', filename: image, readOnly: true } });
    expect(node.driver.name).toBe('vdi');
    await node.unref();
    fs.writeFileSync(p('raw.img'), Buffer.alloc(MiB, 0xbe));
    const raw = await layer.openNode({ driver: 'auto', readOnly: true, file: { driver: 'file', filename: p('raw.img'), readOnly: true } });
    expect(raw.driver.name).toBe('raw');
    await raw.unref();
  });
});

describe.skipIf(!available)('vdi: writes through our driver, judged by qemu-img', () => {
  for (const kind of ['static=off', 'static=on']) {
    it(`${kind}: random writes, zeroes and discards match a model; qemu-img check clean, compare equal`, async () => {
      const size = 24 * MiB;
      const image = p(`rw-${kind}.vdi`);
      qemuImg('create', '-q', '-f', 'vdi', '-o', kind, image, String(size));
      const model = new Uint8Array(size);
      const rnd = prng(kind === 'static=on' ? 7 : 11);
      const d = await openVdi(image);
      try {
        for (let round = 0; round < 30; round++) {
          // A batch of disjoint writes at once, several in one block: allocations race.
          const block = rnd(24) * MiB;
          const batch: Promise<void>[] = [];
          for (let slot = 0; slot < 6; slot++) {
            const off = block + slot * 128 * 1024 + rnd(1000);
            const len = 1 + rnd(60_000);
            const data = new Uint8Array(len).fill(1 + rnd(255));
            model.set(data, off);
            batch.push(d.write(off, data));
          }
          await Promise.all(batch);
          const op = rnd(10);
          const off = rnd(size - 1);
          const len = 1 + rnd(Math.min(3 * MiB, size - off - 1));
          if (op < 6) {
            const data = new Uint8Array(len).map(() => rnd(256));
            model.set(data, off);
            await d.write(off, data);
          } else if (op < 8) {
            model.fill(0, off, off + len);
            await d.writeZeroes(off, len);
          } else {
            // a hint: the data stays
            await d.discard(off, len);
          }
        }
        expect(Buffer.from(await d.read(0, size)).equals(Buffer.from(model))).toBe(true);
      } finally {
        await d.close();
      }
      expect(check(image)).toMatchObject({ code: 0 });
      fs.writeFileSync(p('model.raw'), model);
      const cmp = spawnSync('qemu-img', ['compare', '-f', 'vdi', '-F', 'raw', image, p('model.raw')], { encoding: 'utf8' });
      expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
      expect(cmp.status).toBe(0);
    });
  }

  it('many writes into one unallocated block at once allocate it once', async () => {
    const image = p('race.vdi');
    qemuImg('create', '-q', '-f', 'vdi', image, '4M');
    const before = fs.statSync(image).size;
    const d = await openVdi(image);
    try {
      await Promise.all(Array.from({ length: 32 }, (_, i) => d.write(MiB + i * 4096, new Uint8Array(4096).fill(i + 1))));
      expect(d.node.info().blocksAllocated).toBe(1);
    } finally {
      await d.close();
    }
    expect(fs.statSync(image).size).toBe(before + MiB);
    expect(check(image).code).toBe(0);
    const content = qemuContent(image);
    for (let i = 0; i < 32; i++) expect(content[MiB + i * 4096]).toBe(i + 1);
  });

  it('qemu-io reads what we wrote past 4 GiB, and we read what it wrote', async () => {
    const image = p('far.vdi');
    qemuImg('create', '-q', '-f', 'vdi', image, '6G');
    const d = await openVdi(image);
    try {
      await d.write(5 * GiB + 12345, new Uint8Array(70_000).fill(0xc3));
    } finally {
      await d.close();
    }
    const r = spawnSync('qemu-io', ['-f', 'vdi', '-c', `read -P 0xc3 ${5 * GiB + 12345} 70000`, '-c', `read -P 0 ${5 * GiB} 12345`, image], { encoding: 'utf8' });
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    expect(r.status).toBe(0);
    qemuIo(image, ['write -P 0x3c 4294967296 4k'], 'vdi');
    const again = await openVdi(image, true);
    try {
      expect(Buffer.from(await again.read(4 * GiB, 4096)).every((b) => b === 0x3c)).toBe(true);
      expect(Buffer.from(await again.read(5 * GiB + 12345, 70_000)).every((b) => b === 0xc3)).toBe(true);
    } finally {
      await again.close();
    }
    expect(check(image).code).toBe(0);
  });
});

describe.skipIf(!available)('vdi: images we create', () => {
  const cases: { name: string; size: number; options: Record<string, unknown>; expected: number }[] = [
    { name: 'dynamic', size: 5 * MiB, options: {}, expected: 5 * MiB },
    { name: 'static', size: 5 * MiB, options: { static: true }, expected: 5 * MiB },
    { name: 'static by word', size: 3 * MiB + 1, options: { static: 'on' }, expected: 3 * MiB + 512 },
    { name: 'odd', size: 1000, options: { static: 'off' }, expected: 1024 },
    { name: 'empty', size: 0, options: {}, expected: 0 },
  ];
  for (const c of cases) {
    it(`${c.name}: qemu-img check clean, qemu-img info's size, qemu-io writes it, we read it`, async () => {
      const image = p(`made-${c.name.replace(/\W/g, '-')}.vdi`);
      fs.writeFileSync(image, '');
      const file = await layer.openNode({ driver: 'file', filename: image });
      let got: number;
      try {
        got = await creator.create(file, c.size, c.options);
      } finally {
        await file.unref();
      }
      expect(got).toBe(c.expected);
      expect(check(image).code).toBe(0);
      const info = JSON.parse(qemuImg('info', '--output=json', image)) as Record<string, unknown>;
      expect(info).toMatchObject({ format: 'vdi', 'virtual-size': c.expected, 'cluster-size': MiB });
      const staticImage = c.options.static === true || c.options.static === 'on';
      if (c.expected > 0) {
        expect(fs.statSync(image).size).toBe(staticImage ? 512 + 512 * Math.ceil((Math.ceil(c.expected / MiB) * 4) / 512) + Math.ceil(c.expected / MiB) * MiB : 1024);
        qemuIo(image, [`write -P 0x5e 0 ${Math.min(4096, c.expected)}`], 'vdi');
        expect(check(image).code).toBe(0);
      }
      const d = await openVdi(image, true);
      try {
        expect(d.length).toBe(c.expected);
        expect(d.node.info()).toMatchObject({ format: 'vdi', imageType: staticImage ? 'static' : 'dynamic', clusterSize: MiB });
        if (c.expected > 0) expect(Buffer.from(await d.read(0, Math.min(4096, c.expected))).every((b) => b === 0x5e)).toBe(true);
      } finally {
        await d.close();
      }
    });
  }

  it('refuses unknown options, a backing file and sizes past the limit, naming the field', async () => {
    fs.writeFileSync(p('x.vdi'), '');
    const target = await layer.openNode({ driver: 'file', filename: p('x.vdi') });
    try {
      const e1 = await creator.create(target, MiB, { subformat: 'dynamic' }).catch((e) => e);
      expect(e1).toMatchObject({ code: 'EINVAL', field: 'subformat' });
      const e2 = await creator.create(target, MiB, { static: 'maybe' }).catch((e) => e);
      expect(e2).toMatchObject({ code: 'EINVAL', field: 'static' });
      const e3 = await creator.create(target, MiB, {}, { name: 'base.vdi', format: 'vdi', size: MiB }).catch((e) => e);
      expect(e3).toMatchObject({ code: 'ENOTSUP', field: 'backing' });
      const e4 = await creator.create(target, 2 ** 50, {}).catch((e) => e);
      expect(e4).toMatchObject({ code: 'ENOTSUP', field: 'size' });
    } finally {
      await target.unref();
    }
    expect(fs.statSync(p('x.vdi')).size).toBe(0);
  });
});

describe.skipIf(!available)('vdi: hostile images give a clear BlockError within a second', () => {
  /** A qemu-img-made 4 MiB image with two blocks written, then patched. */
  function made(name: string, patch: (b: Buffer) => Buffer): string {
    const image = p(`${name}.vdi`);
    qemuImg('create', '-q', '-f', 'vdi', image, '4M');
    qemuIo(image, ['write -P 0x11 0 4k', 'write -P 0x22 2M 4k'], 'vdi');
    fs.writeFileSync(image, patch(fs.readFileSync(image)));
    return image;
  }
  const setU32 = (at: number, v: number) => (b: Buffer) => {
    b.writeUInt32LE(v >>> 0, at);
    return b;
  };
  const cases: [string, (b: Buffer) => Buffer, string, string][] = [
    ['truncated in a data block', (b) => b.subarray(0, b.length - 5000), 'ECORRUPT', 'block_map'],
    ['truncated in the block map', (b) => b.subarray(0, 520), 'ECORRUPT', 'offset_bmap'],
    ['truncated in the header', (b) => b.subarray(0, 300), 'ECORRUPT', 'header'],
    ['an entry out of range', setU32(0x200, 1000), 'ECORRUPT', 'block_map'],
    ['two entries on one block', setU32(0x208, 0), 'ECORRUPT', 'block_map'],
    ['an absurd block count', setU32(0x180, 0x3fffffff), 'ENOTSUP', 'blocks_in_image'],
    [
      'an absurd disk size',
      (b) => {
        b.writeBigUInt64LE(2n ** 60n, 0x170);
        return b;
      },
      'ENOTSUP',
      'disk_size',
    ],
    ['a map overlapping the data', setU32(0x158, 0x200), 'ECORRUPT', 'offset_data'],
    ['a parent (a differencing image)', setU32(0x1b8, 0xdead), 'ENOTSUP', 'uuid_parent'],
  ];
  for (const [what, patch, code, field] of cases) {
    it(`${what}: ${code} naming ${field}`, async () => {
      const image = made(what.replace(/\W/g, '-'), patch);
      const started = Date.now();
      const e = await openVdi(image, true).then(
        async (d) => {
          await d.close();
          return undefined;
        },
        (err) => err,
      );
      expect(Date.now() - started).toBeLessThan(1000);
      expect(e).toBeInstanceOf(BlockError);
      expect(e).toMatchObject({ code, field });
    });
  }
});

describe.skipIf(!available)('vdi: check, as qemu-img check -f vdi', () => {
  /** A 4 MiB image with blocks 0 and 2 written, then patched. */
  function made(name: string, patch: (b: Buffer) => void): string {
    const image = p(`check-${name}.vdi`);
    qemuImg('create', '-q', '-f', 'vdi', image, '4M');
    qemuIo(image, ['write -P 0x11 0 4k', 'write -P 0x22 2M 4k'], 'vdi');
    const b = fs.readFileSync(image);
    patch(b);
    fs.writeFileSync(image, b);
    return image;
  }
  const ours = (image: string) => checkImage({ driver: 'vdi', file: { driver: 'file', filename: image } });
  const cases: [string, (b: Buffer) => void, number][] = [
    ['clean', () => {}, 0],
    ['a block used twice', (b) => b.writeUInt32LE(0, 0x208), 1],
    ['an entry out of range', (b) => b.writeUInt32LE(77, 0x200), 2],
    ['a wrong allocated count', (b) => b.writeUInt32LE(3, 0x184), 1],
  ];
  for (const [what, patch, corruptions] of cases) {
    it(`${what}: ${corruptions} corruptions, where qemu-img check finds ${corruptions ? 'them' : 'none'}`, async () => {
      const image = made(what.replace(/\W/g, '-'), patch);
      const theirs = check(image);
      expect(theirs.code).toBe(corruptions ? 2 : 0);
      const lines: string[] = [];
      const r = await checkImage({ driver: 'vdi', file: { driver: 'file', filename: image } }, { log: (l) => lines.push(l) });
      expect(r).toMatchObject({ format: 'vdi', corruptions, leaks: 0, checkErrors: 0 });
      // qemu-img prints the same findings on stderr
      for (const l of lines) expect(theirs.out).toContain(l);
    });
  }

  it('repair is refused (qemu-img cannot repair vdi either)', async () => {
    const image = made('repair', () => {});
    await expect(checkImage({ driver: 'vdi', file: { driver: 'file', filename: image } }, { repair: 'all' })).rejects.toMatchObject({ code: 'ENOTSUP' });
    expect(await ours(image)).toMatchObject({ corruptions: 0 });
  });
});
