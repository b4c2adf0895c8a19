/**
 * The image-format part of scripts/fuzz.ts that reaches past a plain open: seeds with persistent
 * bitmaps, a dirty vhdx log, differencing images over a base, multi-file vmdk (descriptor and
 * extents); a mutator for descriptor text; and the operations a mutant that opened goes through
 * (writes, write-zeroes, discard, flush, bitmap operations, check / info / map).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { checksumWithField } from '../src/drivers/vhdx/crc32c.js';
import { vhdxDriver } from '../src/drivers/vhdx/index.js';
import type { Drive } from '../src/drive.js';
import { BlockLayer } from '../src/layer.js';
import { checkImage } from '../src/tools/check.js';
import { imageInfo } from '../src/tools/info.js';
import { imageMap } from '../src/tools/map.js';
import { writeDifferencingVhd } from '../tests/helpers/vhd-differencing.js';
import { buildLogEntry } from '../tests/helpers/vhdx-log.js';

export interface RngLike {
  u32: () => number;
  int(n: number): number;
  chance(p: number): boolean;
  pick<T>(xs: readonly T[]): T;
}

/** A seed of several files: `name` is the file mutated, `open` the one opened (default `name`), `companions` copied beside it. */
export interface FormatSeed {
  name: string;
  open?: string;
  companions?: string[];
  /** The mutated file is descriptor text (vmdk). */
  text?: boolean;
  snapshots?: string[];
}

export const FORMAT_SEEDS: FormatSeed[] = [
  { name: 'bitmaps.qcow2' },
  { name: 'bitmaps-1k.qcow2' },
  { name: 'bitmaps-snap.qcow2', snapshots: ['s1'] },
  { name: 'bitmaps-inuse.qcow2' },
  { name: 'dirty-log.vhdx' },
  { name: 'diff.vhdx', companions: ['parent.vhdx'] },
  { name: 'diff.vpc', companions: ['parent.vpc'] },
  { name: 'flat.vmdk', companions: ['flat-flat.vmdk'], text: true },
  { name: 'split.vmdk', companions: ['split-s001.vmdk', 'split-s002.vmdk'], text: true },
  { name: 'split-s001.vmdk', open: 'split.vmdk', companions: ['split.vmdk', 'split-s002.vmdk'] },
  { name: 'zeroed.vmdk' },
  { name: 'child.vmdk', companions: ['parent.vmdk'] },
];

/** Companions of the older seeds (a qcow2 overlay's base, a data file). */
export const COMPANIONS: Record<string, string[]> = { 'overlay.qcow2': ['base.qcow2'], 'datafile.qcow2': ['datafile.data'] };

const MiB = 1024 * 1024;

/** Sets the log GUID of both vhdx headers (checksums redone), as a crash with a dirty log leaves them. */
function setVhdxLogGuid(b: Buffer, guid: Uint8Array): void {
  for (const at of [0x10000, 0x20000]) {
    const h = b.subarray(at, at + 4096);
    h.set(guid, 48);
    h.writeUInt32LE(0, 4);
    h.writeUInt32LE(checksumWithField(h, 4), 4);
  }
}

/** Makes the seeds of FORMAT_SEEDS in `dir` with qemu-img and qemu-io (and by hand where they cannot). */
export async function makeFormatCorpus(dir: string): Promise<void> {
  const img = (...a: string[]) => execFileSync('qemu-img', a, { cwd: dir, stdio: 'pipe' });
  const io = (fmt: string, file: string, ...cmds: string[]) => execFileSync('qemu-io', ['-f', fmt, ...cmds.flatMap((c) => ['-c', c]), file], { cwd: dir, stdio: 'pipe' });
  const p = (name: string) => path.join(dir, name);
  // qcow2 with persistent bitmaps: two recording (one of 512 KiB granules), one disabled; writes make some granules dirty
  img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', 'bitmaps.qcow2', '4M');
  img('bitmap', '--add', 'bitmaps.qcow2', 'b0');
  img('bitmap', '--add', '-g', '512k', 'bitmaps.qcow2', 'b1');
  img('bitmap', '--add', '--disable', 'bitmaps.qcow2', 'off');
  io('qcow2', 'bitmaps.qcow2', 'write -P 0xab 0 64k', 'write -P 0x12 2M 4k', 'write -z 3M 128k');
  // small clusters, fine granules: bitmap tables of several clusters
  img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=1024', 'bitmaps-1k.qcow2', '16M');
  img('bitmap', '--add', '-g', '512', 'bitmaps-1k.qcow2', 'fine');
  img('bitmap', '--add', '-g', '4k', 'bitmaps-1k.qcow2', 'coarse');
  io('qcow2', 'bitmaps-1k.qcow2', 'write -P 0xab 0 8k', 'write -P 0x21 5M 1k', 'write -P 0x22 9M 64k', 'write -P 0x23 15M 512');
  // bitmaps and an internal snapshot
  img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', 'bitmaps-snap.qcow2', '4M');
  img('bitmap', '--add', 'bitmaps-snap.qcow2', 'before');
  io('qcow2', 'bitmaps-snap.qcow2', 'write -P 0xab 0 64k');
  img('snapshot', '-q', '-c', 's1', 'bitmaps-snap.qcow2');
  img('bitmap', '--add', '--disable', 'bitmaps-snap.qcow2', 'after');
  io('qcow2', 'bitmaps-snap.qcow2', 'write -P 0x31 1M 4k');
  // bitmaps left in use: qemu-io opens read-write (flags the bitmaps in use) and is killed
  fs.copyFileSync(p('bitmaps.qcow2'), p('bitmaps-inuse.qcow2'));
  try {
    io('qcow2', 'bitmaps-inuse.qcow2', 'write -P 0x44 1M 4k', 'sigraise 9');
  } catch {
    // killed, as meant
  }
  // vhdx with a dirty log (no tool leaves one): block 0 mapped by the log, 8 KiB zeroed and a sector written
  img('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', 'dirty-log.vhdx', '16M');
  {
    const b = Buffer.concat([fs.readFileSync(p('dirty-log.vhdx'))]);
    const grown = Buffer.alloc(Math.max(b.length, 9 * MiB));
    b.copy(grown);
    const bat = Buffer.from(grown.subarray(2 * MiB, 2 * MiB + 4096));
    bat.writeBigUInt64LE(BigInt(8 * MiB) | 6n, 0);
    grown.fill(0x21, 8 * MiB, 9 * MiB);
    const guid = Uint8Array.from({ length: 16 }, (_, i) => i * 29 + 5);
    const sector = new Uint8Array(4096).fill(0x99);
    const entry = buildLogEntry({
      sequence: 9n,
      logGuid: guid,
      changes: [{ fileOffset: 2 * MiB, data: bat }, { fileOffset: 8 * MiB + 4096, zeroLength: 8192 }, { fileOffset: 8 * MiB + 65536, data: sector }],
      flushedFileOffset: b.length,
      lastFileOffset: 10 * MiB - 4096,
    });
    grown.set(entry, MiB);
    setVhdxLogGuid(grown, guid);
    fs.writeFileSync(p('dirty-log.vhdx'), grown);
  }
  // vhdx differencing (qemu-img cannot make one; our create can) over a qemu-img base
  img('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', 'parent.vhdx', '4M');
  io('vhdx', 'parent.vhdx', 'write -P 0x51 0 1M', 'write -P 0x52 3M 4k');
  {
    fs.writeFileSync(p('diff.vhdx'), '');
    const layer = new BlockLayer();
    try {
      const node = await layer.openNode({ driver: 'file', filename: p('diff.vhdx') });
      await vhdxDriver.create!.create(node, 4 * MiB, { block_size: '1M' }, { name: 'parent.vhdx', format: 'vhdx', size: 4 * MiB });
      await node.unref();
      const drive = await layer.openDrive({ driver: 'vhdx', file: { driver: 'file', filename: p('diff.vhdx') } });
      await drive.write(4096, new Uint8Array(8192).fill(0x53));
      await drive.write(2 * MiB + 512, new Uint8Array(512).fill(0x54));
    } finally {
      await layer.close();
    }
  }
  // vpc differencing (qemu-img cannot make one either): written from the spec over a qemu-img base
  img('create', '-q', '-f', 'vpc', 'parent.vpc', '4M');
  io('vpc', 'parent.vpc', 'write -P 0x61 0 64k', 'write -P 0x62 2M 4k');
  {
    const sectors = new Map<number, Uint8Array>();
    for (const s of [1, 2, 3, 4100, 8000]) sectors.set(s, new Uint8Array(512).fill(s & 0xff));
    const size = Number(JSON.parse(String(img('info', '--output=json', 'parent.vpc')))['virtual-size']);
    writeDifferencingVhd(p('diff.vpc'), { parent: p('parent.vpc'), size, blockSize: MiB, sectors, locators: [{ platform: 'W2ru', path: '.\\parent.vpc' }, { platform: 'W2ku', path: p('parent.vpc') }] });
  }
  // vmdk: monolithicFlat, twoGbMaxExtentSparse (two extents), zeroed grains, a child over a parent
  img('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', 'flat.vmdk', '1M');
  io('vmdk', 'flat.vmdk', 'write -P 0xab 4k 8k');
  img('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', 'split.vmdk', '4M');
  io('vmdk', 'split.vmdk', 'write -P 0xab 0 64k', 'write -P 0x71 3M 4k');
  // a second extent, so that the descriptor's extent lines add up: split-s002 adds 4 MiB
  {
    const desc = fs.readFileSync(p('split.vmdk'), 'utf8');
    fs.copyFileSync(p('split-s001.vmdk'), p('split-s002.vmdk'));
    fs.writeFileSync(p('split.vmdk'), desc.replace(/RW 8192 SPARSE "split-s001.vmdk"/, 'RW 8192 SPARSE "split-s001.vmdk"\nRW 8192 SPARSE "split-s002.vmdk"'));
  }
  img('create', '-q', '-f', 'vmdk', '-o', 'zeroed_grain=on', 'zeroed.vmdk', '4M');
  io('vmdk', 'zeroed.vmdk', 'write -P 0xab 0 64k', 'write -z 64k 64k', 'write -z 1M 128k', 'write -P 0x72 2M 4k');
  img('create', '-q', '-f', 'vmdk', 'parent.vmdk', '4M');
  io('vmdk', 'parent.vmdk', 'write -P 0x81 0 128k');
  img('create', '-q', '-f', 'vmdk', '-b', 'parent.vmdk', '-F', 'vmdk', 'child.vmdk', '4M');
  io('vmdk', 'child.vmdk', 'write -P 0x82 64k 4k');
}

// ---------------------------------------------------------------- descriptor text

const DESC_LINES = [
  'RW 2048 FLAT "flat-flat.vmdk" 0', 'RW 4294967295 FLAT "flat-flat.vmdk" 0', 'RW 2048 FLAT "flat-flat.vmdk" 9007199254740991',
  'RW 8192 SPARSE "split-s001.vmdk"', 'RDONLY 8192 SPARSE "split-s002.vmdk"', 'RW 8192 SPARSE "split.vmdk"', 'RW 8192 SPARSE "flat.vmdk"',
  'RW 0 SPARSE "split-s001.vmdk"', 'RW 1 ZERO', 'RW 8192 ZERO', 'NOACCESS 8192 FLAT "flat-flat.vmdk" 0', 'RW 8192 VMFS "flat-flat.vmdk"',
  'RW 8192 VMFSSPARSE "split-s001.vmdk"', 'RW 8192 SESPARSE "split-s001.vmdk"', 'RW 8192 FLAT "missing.vmdk" 0', 'RW 8192 FLAT "" 0',
  'RW 8192 FLAT "flat-flat.vmdk', 'RW -1 FLAT "flat-flat.vmdk" 0', 'RW 1e3 FLAT "flat-flat.vmdk" 0', 'RW 8192 SPARSE "sub/../split-s001.vmdk"',
  'parentFileNameHint="parent.vmdk"', 'parentFileNameHint="flat.vmdk"', 'parentFileNameHint="split.vmdk"', 'parentFileNameHint="missing.vmdk"',
  'parentFileNameHint=""', 'parentCID=ffffffff', 'parentCID=0', 'CID=fffffffe', 'CID=zz', 'version=1', 'version=3', 'version=0',
  'createType="monolithicFlat"', 'createType="twoGbMaxExtentSparse"', 'createType="twoGbMaxExtentFlat"', 'createType="monolithicSparse"',
  'createType="vmfs"', 'createType="vmfsSparse"', 'createType="streamOptimized"', 'createType="seSparse"', 'createType="custom"',
  'ddb.geometry.cylinders = "0"', 'ddb.adapterType = "lsilogic"', '# Disk DescriptorFile', '', '=', '"', 'RW',
];
const DESC_NUMBERS = ['0', '1', '-1', '512', '2048', '8192', '4294967295', '4294967296', '9007199254740993', '18446744073709551615', '1e30', '0x10', ''];

/** Mutates descriptor text: whole lines added, removed, duplicated or replaced; numbers and words changed; bytes flipped. */
export function mutateText(rng: RngLike, seed: Buffer): { bytes: Buffer; ops: string[] } {
  const lines = seed.toString('latin1').split('\n');
  const ops: string[] = [];
  const n = 1 + rng.int(rng.chance(0.7) ? 2 : 6);
  for (let i = 0; i < n; i++) {
    const op = rng.int(7);
    const at = rng.int(lines.length);
    if (op === 0) {
      lines.splice(at, 0, rng.pick(DESC_LINES));
      ops.push(`line+ ${at}`);
    } else if (op === 1) {
      lines.splice(at, 1);
      ops.push(`line- ${at}`);
    } else if (op === 2) {
      lines.splice(at, 0, lines[at] ?? '');
      ops.push(`line2 ${at}`);
    } else if (op === 3) {
      // a number of an extent or header line
      const line = lines[at] ?? '';
      const nums = [...line.matchAll(/\d+/g)];
      if (nums.length === 0) continue;
      const m = rng.pick(nums);
      lines[at] = line.slice(0, m.index) + rng.pick(DESC_NUMBERS) + line.slice(m.index + m[0].length);
      ops.push(`num ${at}`);
    } else if (op === 4) {
      lines[at] = rng.pick(DESC_LINES);
      ops.push(`line= ${at}`);
    } else if (op === 5) {
      const line = lines[at] ?? '';
      if (line.length === 0) continue;
      const c = rng.int(line.length);
      lines[at] = line.slice(0, c) + String.fromCharCode(rng.pick([0, 0x22, 0x3d, 0x20, 0x0d, 0x7f, 0xff, 0x41])) + line.slice(c + 1);
      ops.push(`char ${at}.${c}`);
    } else {
      lines.length = Math.min(lines.length, at + 1);
      lines[at] = (lines[at] ?? '').slice(0, rng.int((lines[at] ?? '').length + 1));
      ops.push(`cut ${at}`);
    }
  }
  return { bytes: Buffer.from(lines.join('\n'), 'latin1'), ops };
}

/** The embedded descriptor of a sparse vmdk (offset and size in bytes), when it has one. */
export function embeddedDescriptor(b: Buffer): [number, number] | undefined {
  if (b.length < 512 || b.subarray(0, 4).toString('latin1') !== 'KDMV') return undefined;
  const at = Number(b.readBigUInt64LE(28)) * 512;
  const size = Number(b.readBigUInt64LE(36)) * 512;
  if (at <= 0 || size <= 0 || size > 64 * 1024 || at + size > b.length) return undefined;
  return [at, size];
}

/** Offsets of a qcow2 image's bitmap directory entries and bitmap table entries, for targeted mutations. */
export function bitmapOffsets(b: Buffer): number[] {
  if (b.length < 104 || b.readUInt32BE(4) < 3) return [];
  const out: number[] = [];
  let at = b.readUInt32BE(100);
  for (let i = 0; i < 16 && at + 8 <= Math.min(b.length, 65536); i++) {
    const type = b.readUInt32BE(at);
    const len = b.readUInt32BE(at + 4);
    if (type === 0) break;
    if (type === 0x23852875 && at + 32 <= b.length) {
      for (let j = 0; j < 24; j += 4) out.push(at + 8 + j);
      const dir = Number(b.readBigUInt64BE(at + 24) & 0xffffffffffffffn);
      const dirSize = Number(b.readBigUInt64BE(at + 16) & 0xffffffn);
      let e = dir;
      for (let k = 0; k < 8 && e + 24 <= Math.min(b.length, dir + dirSize); k++) {
        for (let j = 0; j < 24; j += 4) out.push(e + j);
        out.push(e + 16, e + 17);
        const table = Number(b.readBigUInt64BE(e) & 0xfffffffffffe00n);
        const tableSize = b.readUInt32BE(e + 8);
        if (table > 0) for (let t = 0; t < Math.min(tableSize, 8) && table + t * 8 + 8 <= b.length; t++) out.push(table + t * 8);
        const nameSize = b.readUInt16BE(e + 18);
        const extra = b.readUInt32BE(e + 20);
        e += Math.ceil((24 + nameSize + extra) / 8) * 8;
      }
    }
    at += 8 + Math.ceil(len / 8) * 8;
  }
  return out;
}

// ---------------------------------------------------------------- operations on a mutant that opened

/** A few writes of random ranges, a write-zeroes, a discard and a flush (a read-write drive). */
export async function writeOps(drive: Drive, rng: RngLike): Promise<void> {
  const len = drive.length;
  if (len === 0) return;
  const range = (max: number): [number, number] => {
    const sector = rng.chance(0.6);
    const length = Math.max(1, Math.min(len, sector ? 512 * (1 + rng.int(max / 512)) : 1 + rng.int(max)));
    let at = rng.chance(0.2) ? len - length : rng.int(len - length + 1);
    if (sector) at &= ~511;
    return [at, length];
  };
  for (let i = 1 + rng.int(3); i > 0; i--) {
    const [at, length] = range(256 * 1024);
    await drive.write(at, new Uint8Array(length).fill(0x5c + i));
  }
  const z = range(2 * MiB);
  await drive.writeZeroes(z[0], z[1]);
  const d = range(2 * MiB);
  await drive.discard(d[0], d[1]);
  await drive.flush();
  // read back one written range through the format
  const [at, length] = range(65536);
  await drive.read(at, length);
}

/** Bitmap operations on a qcow2 drive: list, walk the dirty extents, add / remove / clear / merge / enable / disable. */
export async function bitmapOps(drive: Drive, rng: RngLike): Promise<void> {
  const names = drive.dirtyBitmaps().map((b) => b.name);
  for (const name of names) {
    let steps = 0;
    for await (const e of drive.dirtyExtents(name)) {
      if (!(e.length > 0)) throw new Error(`dirtyExtents gave an extent of length ${e.length} at ${e.offset}`);
      if (++steps > 4096) break;
    }
  }
  const writable = !drive.readOnly;
  for (let i = 1 + rng.int(4); i > 0; i--) {
    const live = drive.dirtyBitmaps().map((b) => b.name);
    const some = live.length > 0 ? rng.pick(live) : 'none';
    const op = rng.int(6);
    if (op === 0) drive.addDirtyBitmap(`fz${i}`, { persistent: writable && rng.chance(0.7), granularity: rng.pick([512, 4096, 65536, 1 << 20]), disabled: rng.chance(0.2) });
    else if (op === 1) await drive.removeDirtyBitmap(some);
    else if (op === 2) drive.clearDirtyBitmap(some);
    else if (op === 3 && live.length > 0) drive.mergeDirtyBitmaps(some, [rng.pick(live)]);
    else if (op === 4) drive.disableDirtyBitmap(some);
    else drive.enableDirtyBitmap(some);
  }
  if (writable) await drive.write(0, new Uint8Array(4096).fill(0x3e));
}

const CHECKED = new Set(['qcow2', 'vhdx', 'vdi', 'vmdk']);

/** One of checkImage (maybe repairing), imageInfo (maybe the chain) and imageMap on the mutant after it was closed. */
export async function toolOp(file: string, format: string, rng: RngLike, setPhase: (p: string) => void): Promise<void> {
  const which = rng.int(3);
  if (which === 0 && CHECKED.has(format)) {
    setPhase('check');
    await checkImage(file, { format, repair: rng.pick([undefined, undefined, 'leaks', 'all'] as const) });
  } else if (which === 1) {
    setPhase('info');
    await imageInfo({ driver: format, readOnly: true, file: { driver: 'file', filename: file, readOnly: true } } as never, { backingChain: rng.chance(0.5) as never });
  } else {
    setPhase('map');
    await imageMap({ driver: format, readOnly: true, file: { driver: 'file', filename: file, readOnly: true } } as never);
  }
}
