import fs from 'node:fs';
import path from 'node:path';
import { ok } from './tools.js';

/**
 * Kinds of images a writable qcow2 driver must handle, each made fresh by qemu-img (and
 * qemu-io for content), plus `raw`: the same harness over the raw driver, which is writable
 * today, proves the harness itself works.
 */
export interface ImageKind {
  readonly name: string;
  readonly format: 'qcow2' | 'raw';
  readonly clusterSize: number;
  /** Virtual size of the image. */
  readonly size: number;
  /** Guest bytes one L2 table maps (none for raw); tests aim writes across its boundaries. */
  readonly l2Span?: number;
  /** Whether a whole-cluster discard reads zeros afterwards (false: v2 image with a backing file, where it reads the backing). */
  readonly discardZeroes: boolean;
  readonly backing: boolean;
  readonly lazyRefcounts: boolean;
  /**
   * Whether overlapping requests in flight together land in their order of arrival. Promised
   * for qcow2 (the brief of the writer); not by raw over a file, whose requests with alignment 1
   * go to pwrite concurrently (src/node/node.ts orders them only when read-modify-write can happen).
   */
  readonly ordersOverlappingWrites: boolean;
  /** Makes a fresh image `<dir>/<stem>.<ext>` (and its base or data file beside it); returns its path. */
  make(dir: string, stem: string): Promise<string>;
}

const KiB = 1024;
const MiB = 1024 * KiB;

const qemuImg = (...args: string[]) => ok('qemu-img', args);
const qemuIo = (format: string, image: string, commands: string[]) => ok('qemu-io', ['-f', format, ...commands.flatMap((c) => ['-c', c]), image]);

/** Pattern writes that fill about 5/8 of a disk with distinct bytes per slice, leaving holes. */
function patternCommands(size: number, start = 0x41): string[] {
  const slice = size / 8;
  return [0, 1, 3, 4, 6].map((k, i) => `write -P 0x${(start + i).toString(16)} ${k * slice} ${slice}`);
}

/** A small unaligned write too, so bases do not only hold whole clusters. */
function oddCommands(size: number): string[] {
  return [`write -P 0x6f ${size / 8 + 1000} 3000`, `write -z ${size / 2 - 777} 1554`];
}

interface Qcow2KindOptions {
  name: string;
  clusterSize: number;
  size: number;
  /** Extra qemu-img create -o options (besides cluster_size). */
  options?: string[];
  extendedL2?: boolean;
  v2?: boolean;
  lazyRefcounts?: boolean;
  /** Base image: raw, qcow2, or a qcow2 made by `qemu-img convert -c`. */
  base?: 'raw' | 'qcow2' | 'compressed';
  /** An external raw data file (data_file_raw=on). */
  dataFile?: boolean;
  /** Content written by qemu-io, then an internal snapshot, then more writes: clusters shared with the snapshot. */
  snapshot?: boolean;
}

function qcow2Kind(k: Qcow2KindOptions): ImageKind {
  const l2Entries = k.clusterSize / (k.extendedL2 ? 16 : 8);
  return {
    name: k.name,
    format: 'qcow2',
    clusterSize: k.clusterSize,
    size: k.size,
    l2Span: l2Entries * k.clusterSize,
    discardZeroes: !(k.v2 && k.base),
    backing: k.base !== undefined,
    lazyRefcounts: k.lazyRefcounts === true,
    ordersOverlappingWrites: true,
    async make(dir, stem) {
      const image = path.join(dir, `${stem}.qcow2`);
      const opts = [`cluster_size=${k.clusterSize}`, ...(k.options ?? [])];
      if (k.v2) opts.push('compat=0.10');
      if (k.extendedL2) opts.push('extended_l2=on');
      if (k.lazyRefcounts) opts.push('lazy_refcounts=on');
      if (k.dataFile) opts.push(`data_file=${path.join(dir, `${stem}.data`)}`, 'data_file_raw=on');
      const args = ['create', '-q', '-f', 'qcow2', '-o', opts.join(',')];
      if (k.base !== undefined) {
        const base = await makeBase(dir, stem, k.base, k.size);
        args.push('-b', base, '-F', k.base === 'raw' ? 'raw' : 'qcow2');
      }
      await qemuImg(...args, image, String(k.size));
      if (k.snapshot) {
        await qemuIo('qcow2', image, [...patternCommands(k.size), ...oddCommands(k.size)]);
        await qemuImg('snapshot', '-c', 'before', image);
        // Some clusters now differ from the snapshot, most are still shared with it.
        await qemuIo('qcow2', image, [`write -P 0x77 0 ${k.clusterSize}`, `discard ${3 * (k.size / 8)} ${k.clusterSize}`]);
      }
      return image;
    },
  };
}

async function makeBase(dir: string, stem: string, kind: 'raw' | 'qcow2' | 'compressed', size: number): Promise<string> {
  const content = [...patternCommands(size, 0x30), ...oddCommands(size)];
  if (kind === 'raw') {
    const base = path.join(dir, `${stem}.base.raw`);
    await qemuImg('create', '-q', '-f', 'raw', base, String(size));
    await qemuIo('raw', base, content);
    return base;
  }
  const base = path.join(dir, `${stem}.base.qcow2`);
  await qemuImg('create', '-q', '-f', 'qcow2', base, String(size));
  await qemuIo('qcow2', base, content);
  if (kind === 'qcow2') return base;
  const compressed = path.join(dir, `${stem}.base-c.qcow2`);
  await qemuImg('convert', '-q', '-c', '-O', 'qcow2', base, compressed);
  fs.rmSync(base);
  return compressed;
}

/** The raw format over a file: the harness's self-check (writable today). */
export const RAW: ImageKind = {
  name: 'raw',
  format: 'raw',
  clusterSize: 64 * KiB,
  size: 8 * MiB,
  discardZeroes: true,
  backing: false,
  lazyRefcounts: false,
  ordersOverlappingWrites: false,
  async make(dir, stem) {
    const image = path.join(dir, `${stem}.raw`);
    await qemuImg('create', '-q', '-f', 'raw', image, String(8 * MiB));
    await qemuIo('raw', image, patternCommands(8 * MiB));
    return image;
  },
};

export const KINDS = {
  raw: RAW,
  'v3-512': qcow2Kind({ name: 'v3-512', clusterSize: 512, size: 1 * MiB }),
  'v3-64k': qcow2Kind({ name: 'v3-64k', clusterSize: 64 * KiB, size: 8 * MiB }),
  // One L2 table maps 512 MiB here: a sparse 514 MiB image lets writes cross into the second.
  'v3-64k-two-l2': qcow2Kind({ name: 'v3-64k-two-l2', clusterSize: 64 * KiB, size: 514 * MiB }),
  'v3-2M': qcow2Kind({ name: 'v3-2M', clusterSize: 2 * MiB, size: 16 * MiB }),
  'v2-64k': qcow2Kind({ name: 'v2-64k', clusterSize: 64 * KiB, size: 8 * MiB, v2: true }),
  'refcount1-512': qcow2Kind({ name: 'refcount1-512', clusterSize: 512, size: 1 * MiB, options: ['refcount_bits=1'] }),
  'refcount64-64k': qcow2Kind({ name: 'refcount64-64k', clusterSize: 64 * KiB, size: 8 * MiB, options: ['refcount_bits=64'] }),
  'extl2-64k': qcow2Kind({ name: 'extl2-64k', clusterSize: 64 * KiB, size: 8 * MiB, extendedL2: true }),
  'extl2-2M': qcow2Kind({ name: 'extl2-2M', clusterSize: 2 * MiB, size: 16 * MiB, extendedL2: true }),
  'data-file': qcow2Kind({ name: 'data-file', clusterSize: 64 * KiB, size: 8 * MiB, dataFile: true }),
  'backing-raw': qcow2Kind({ name: 'backing-raw', clusterSize: 64 * KiB, size: 8 * MiB, base: 'raw' }),
  'backing-qcow2': qcow2Kind({ name: 'backing-qcow2', clusterSize: 64 * KiB, size: 8 * MiB, base: 'qcow2' }),
  'backing-compressed': qcow2Kind({ name: 'backing-compressed', clusterSize: 64 * KiB, size: 8 * MiB, base: 'compressed' }),
  'v2-backing': qcow2Kind({ name: 'v2-backing', clusterSize: 64 * KiB, size: 8 * MiB, v2: true, base: 'qcow2' }),
  'extl2-backing': qcow2Kind({ name: 'extl2-backing', clusterSize: 64 * KiB, size: 8 * MiB, extendedL2: true, base: 'raw' }),
  snapshot: qcow2Kind({ name: 'snapshot', clusterSize: 64 * KiB, size: 8 * MiB, snapshot: true }),
  'lazy-refcounts': qcow2Kind({ name: 'lazy-refcounts', clusterSize: 64 * KiB, size: 8 * MiB, lazyRefcounts: true }),
} satisfies Record<string, ImageKind>;

export type KindName = keyof typeof KINDS;
