import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, commitImage, openImage } from '../../src/index.js';
import { haveQemuTools, qemuImg, qemuIo, setQemuCwd } from '../helpers/qemu-images.js';
import { CLI } from '../helpers/cli.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('overlay/commit tests skipped: install qemu-utils (apt-get install qemu-utils) to run them');

const MIB = 1024 * 1024;
let dir: string;
let tmp: string;
let savedTmp: string | undefined;
const p = (name: string) => path.join(dir, name);
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const fileHash = (f: string) => sha(fs.readFileSync(f));
const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7) & 0xff);

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-overlay-'));
  // Overlays go to $TMPDIR: a private one shows whether anything is left behind.
  tmp = path.join(dir, 'tmp');
  fs.mkdirSync(tmp);
  savedTmp = process.env.TMPDIR;
  process.env.TMPDIR = tmp;
  setQemuCwd(dir);
});
afterAll(() => {
  if (savedTmp === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = savedTmp;
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('snapshot: true (QEMU -drive snapshot=on): a temporary qcow2 overlay', () => {
  it('takes the writes over a raw file; the base is untouched and nothing is left in TMPDIR', async () => {
    const base = p('base.raw');
    fs.writeFileSync(base, pattern(2 * MIB, 1));
    const before = fileHash(base);
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: base }, snapshot: true });
    expect(d.node.driver.name).toBe('qcow2');
    expect(fs.readdirSync(tmp)).toEqual([]); // unlinked once open
    await d.write(100_000, pattern(70_000, 9));
    await d.writeZeroes(MIB, 65536);
    const expected = pattern(2 * MIB, 1);
    expected.set(pattern(70_000, 9), 100_000);
    expected.fill(0, MIB, MIB + 65536);
    expect(sha(await d.read(0, 2 * MIB))).toBe(sha(expected));
    await d.flush();
    await d.close();
    await layer.close();
    expect(fileHash(base)).toBe(before);
    expect(fs.readdirSync(tmp)).toEqual([]);
  });

  it.skipIf(!available)('works over a qcow2 chain, a memory node, and through openImage', async () => {
    fs.writeFileSync(p('b.raw'), pattern(MIB, 2));
    qemuImg('create', '-q', '-f', 'qcow2', '-b', p('b.raw'), '-F', 'raw', p('mid.qcow2'));
    qemuIo(p('mid.qcow2'), ['write -P 0x44 64k 64k']);
    const before = fileHash(p('mid.qcow2'));
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: p('mid.qcow2') }, snapshot: true });
    await d.write(0, new Uint8Array(512).fill(0x55));
    const got = await d.read(0, 192 * 1024);
    expect(got[0]).toBe(0x55);
    expect(got[65536]).toBe(0x44);
    expect(got[140_000]).toBe(pattern(MIB, 2)[140_000]);
    await d.close();
    expect(fileHash(p('mid.qcow2'))).toBe(before);

    const m = await layer.openDrive({ driver: 'memory', size: 65536, snapshot: true });
    await m.write(0, new Uint8Array([1, 2, 3]));
    expect([...(await m.read(0, 3))]).toEqual([1, 2, 3]);
    await m.close();

    const i = await openImage(p('b.raw'), { snapshot: true }, layer);
    await i.write(0, new Uint8Array(4096).fill(0xee));
    expect((await i.read(0, 1))[0]).toBe(0xee);
    await i.close();
    expect(fileHash(p('b.raw'))).toBe(sha(pattern(MIB, 2)));
    await layer.close();
    expect(fs.readdirSync(tmp)).toEqual([]);
  });

  it.skipIf(!available)('a string snapshot still names an internal snapshot; other types are EINVAL', async () => {
    const layer = new BlockLayer();
    qemuImg('create', '-q', '-f', 'qcow2', p('snap.qcow2'), '1M');
    qemuIo(p('snap.qcow2'), ['write -P 0x01 0 64k']);
    qemuImg('snapshot', '-c', 'one', p('snap.qcow2'));
    qemuIo(p('snap.qcow2'), ['write -P 0x02 0 64k']);
    const d = await layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: p('snap.qcow2') }, snapshot: 'one' });
    expect((await d.read(0, 1))[0]).toBe(0x01);
    await d.close();
    await expect(layer.openDrive({ driver: 'memory', size: 4096, snapshot: 1 as unknown as boolean })).rejects.toMatchObject({ code: 'EINVAL', field: 'snapshot' });
    await layer.close();
  });
});

describe.skipIf(!available)('commit: merge an overlay into its backing file (qemu-img commit)', () => {
  /** A raw or qcow2 base with a pattern and a qcow2 overlay with qemu-io writes, zeroes and a discard on it. */
  function chain(name: string, baseFormat: 'raw' | 'qcow2') {
    const base = p(`${name}-base.${baseFormat}`);
    const top = p(`${name}-top.qcow2`);
    if (baseFormat === 'raw') fs.writeFileSync(base, pattern(4 * MIB, 3));
    else {
      qemuImg('create', '-q', '-f', 'qcow2', base, '4M');
      qemuIo(base, ['write -P 0x21 0 4M']);
    }
    qemuImg('create', '-q', '-f', 'qcow2', '-b', path.basename(base), '-F', baseFormat, top);
    qemuIo(top, ['write -P 0x77 0 100k', 'write -z 1M 64k', 'write -P 0x78 3000k 5k', 'write -P 0x79 4092k 4k']);
    return { base, top };
  }

  for (const baseFormat of ['raw', 'qcow2'] as const) {
    it(`into a ${baseFormat} base gives what qemu-img commit gives, and empties the overlay`, async () => {
      const ours = chain(`ours-${baseFormat}`, baseFormat);
      const theirs = chain(`theirs-${baseFormat}`, baseFormat);
      const view = p(`view-${baseFormat}.raw`);
      qemuImg('convert', '-O', 'raw', ours.top, view);
      const r = await commitImage(ours.top);
      expect(r.emptied).toBe(true);
      expect(r.backingFile).toBe(ours.base);
      qemuImg('commit', '-q', theirs.top);
      // same guest view of the base as qemu-img's commit, and as the chain had before
      qemuImg('compare', '-q', '-f', baseFormat, '-F', baseFormat, ours.base, theirs.base);
      qemuImg('compare', '-q', '-f', baseFormat, '-F', 'raw', ours.base, view);
      // the overlay is empty and clean, and still reads the same through the chain
      const map = JSON.parse(qemuImg('map', '--output=json', ours.top)) as { depth: number }[];
      expect(map.every((e) => e.depth > 0)).toBe(true);
      if (baseFormat === 'qcow2') expect(JSON.parse(qemuImg('check', '--output=json', ours.base)).corruptions ?? 0).toBe(0);
      expect(JSON.parse(qemuImg('check', '--output=json', ours.top)).leaks ?? 0).toBe(0);
      qemuImg('compare', '-q', ours.top, view);
    });
  }

  it('blocklayer commit -d keeps the overlay; a missing backing file is EINVAL', () => {
    const c = chain('cli', 'raw');
    const r = spawnSync(process.execPath, [...CLI, 'commit', '-d', c.top], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('Image committed.\n');
    expect(r.status).toBe(0);
    const map = JSON.parse(qemuImg('map', '--output=json', c.top)) as { depth: number; data: boolean }[];
    expect(map.some((e) => e.depth === 0)).toBe(true);
    qemuImg('create', '-q', '-f', 'qcow2', p('alone.qcow2'), '1M');
    const bad = spawnSync(process.execPath, [...CLI, 'commit', p('alone.qcow2')], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/EINVAL: .*has no backing file/);
  });
});
