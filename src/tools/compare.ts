import { BlockError, isBlockError } from '../errors.js';
import { BlockLayer, type DriveOptions } from '../layer.js';
import type { BlockNode } from '../node/node.js';
import type { BlockStatus } from '../node/types.js';
import { forEachChunk, sameBytes, sectorRun } from './chunk-pool.js';
import { canceled, type OpenedInput, openInput } from './open-input.js';

/** Options of {@link compareImages}. */
export interface CompareOptions {
  /** Format of the first image (qemu-img compare's `-f`); probed when omitted. */
  formatA?: string;
  /** Format of the second image (`-F`); probed when omitted. */
  formatB?: string;
  /** qemu-img compare -s: a size difference, or a range allocated in one image and not the other, is a difference. */
  strict?: boolean;
  /** Read-only, sharing everything: compare images another process holds read-write (`-U`). */
  forceShare?: boolean;
  /** Called after each piece with the bytes compared so far and the larger image's size. */
  onProgress?: (done: number, total: number) => void;
  /** Stops the comparison: the promise rejects with ECANCELED whose `cause` is the signal's reason. */
  signal?: AbortSignal;
  /** The layer the images open in (its clock, its drivers); a private one, closed afterwards, by default. */
  layer?: BlockLayer;
}

/** Why two images differ: their content, their sizes (strict), or their allocation (strict). */
export type CompareReason = 'content' | 'size' | 'block-status';

/** What {@link compareImages} found. */
export interface CompareResult {
  /** The guest sees the same bytes in both (and, strict, the same size and allocation). */
  identical: boolean;
  /**
   * Where the images first differ: the start of the first 512-byte sector that differs (as
   * qemu-img compare reports it) or, strict, where the allocation first differs. Absent when
   * identical or when the sizes differ in strict mode.
   */
  firstDifference?: number;
  /** Why they differ; absent when identical. */
  reason?: CompareReason;
  /** The virtual sizes of the two images. */
  sizes: [number, number];
}

/** Where {@link compareImages} failed: qemu-img compare's exit codes 2 (open), 3 (block status), 4 (read). */
export type CompareStage = 'open' | 'block-status' | 'read';

/** A failure of {@link compareImages}, with the stage it happened in (the CLI's exit code). */
export class CompareError extends BlockError {
  readonly stage: CompareStage;
  constructor(stage: CompareStage, e: unknown, message: string) {
    const base = isBlockError(e) ? e : undefined;
    super(base?.code ?? 'EIO', message, { cause: e, path: base?.path, node: base?.node, offset: base?.offset, field: base?.field });
    this.stage = stage;
  }
}

/** qemu-img's buffer: 2 MiB per read. */
const PIECE = 2 * 1024 * 1024;
const PARALLEL = 4;

/** Both statuses say the same of allocation and content (strict mode). */
const sameStatus = (a: BlockStatus, b: BlockStatus) => a.allocated === b.allocated && a.zero === b.zero && a.data === b.data;

/**
 * `qemu-img compare A B`: whether the guest sees the same bytes in both images. Images of
 * different sizes compare equal when the larger one reads as zeros past the smaller one's end
 * (strict: they differ). Ranges both read as zeros (block status) are not read, so sparse images
 * compare fast; several pieces are read at once. The first difference is the smallest offset.
 *
 * Unlike qemu-img, strict mode compares the allocation flags only, not whether the extent reaches
 * the end of the image (QEMU's EOF flag), which made qemu-img report a mismatch earlier than the
 * first range whose allocation differs.
 */
export async function compareImages(a: string | DriveOptions, b: string | DriveOptions, options: CompareOptions = {}): Promise<CompareResult> {
  const { signal } = options;
  const layer = options.layer ?? new BlockLayer();
  const inputs: OpenedInput[] = [];
  try {
    const open = async (target: string | DriveOptions, format: string | undefined) => {
      try {
        const input = await openInput(target, { format, forceShare: options.forceShare, layer, signal }, 'compare');
        inputs.push(input);
        return input.drive.node;
      } catch (e) {
        if (isBlockError(e) && e.code === 'ECANCELED') throw e;
        const name = typeof target === 'string' ? target : JSON.stringify(target);
        throw new CompareError('open', e, `Could not open '${name}': ${(e as Error).message}`);
      }
    };
    const nodeA = await open(a, options.formatA);
    const nodeB = await open(b, options.formatB);
    const sizes: [number, number] = [nodeA.length, nodeB.length];
    if (options.strict && sizes[0] !== sizes[1]) return { identical: false, reason: 'size', sizes };
    const label = (t: string | DriveOptions) => (typeof t === 'string' ? t : JSON.stringify(t));
    const found = await firstDifference(nodeA, nodeB, [label(a), label(b)], options);
    if (found === undefined) return { identical: true, sizes };
    return { identical: false, firstDifference: found.offset, reason: found.reason, sizes };
  } finally {
    for (const input of inputs) await input.drive.close();
    if (options.layer === undefined) await layer.close();
  }
}

/** The first difference of the two nodes' guest views (and, strict, allocation), or undefined. */
async function firstDifference(nodeA: BlockNode, nodeB: BlockNode, names: [string, string], options: CompareOptions): Promise<{ offset: number; reason: CompareReason } | undefined> {
  const common = Math.min(nodeA.length, nodeB.length);
  const total = Math.max(nodeA.length, nodeB.length);
  const larger = nodeA.length >= nodeB.length ? nodeA : nodeB;
  const strict = options.strict === true;
  let best: { offset: number; reason: CompareReason } | undefined;
  const found = (offset: number, reason: CompareReason) => {
    if (best === undefined || offset < best.offset) best = { offset, reason };
  };
  const buffers: [Uint8Array, Uint8Array][] = [];
  const buffersOf = (slot: number) => (buffers[slot] ??= [new Uint8Array(Math.min(PIECE, total)), new Uint8Array(Math.min(PIECE, total))]);
  let zeros: Uint8Array | undefined;
  const nameOf = (node: BlockNode) => (node === nodeA ? names[0] : names[1]);
  const status = (node: BlockNode, pos: number, length: number) =>
    node.blockStatus(pos, length).catch((e: unknown) => {
      throw new CompareError('block-status', e, `Sector allocation test failed for ${nameOf(node)}: ${(e as Error).message}`);
    });
  const read = (node: BlockNode, pos: number, part: Uint8Array) =>
    node.read(pos, part).catch((e: unknown) => {
      throw new CompareError('read', e, `Error while reading offset ${pos} of ${nameOf(node)}: ${(e as Error).message}`);
    });

  // Both images over [pos, end) (end <= common): stops at the first difference.
  const both = async (pos: number, end: number, [bufA, bufB]: [Uint8Array, Uint8Array]) => {
    while (pos < end) {
      const sA = await status(nodeA, pos, end - pos);
      const sB = await status(nodeB, pos, end - pos);
      const n = Math.min(sA.length, sB.length);
      if (strict && !sameStatus(sA, sB)) return found(pos, 'block-status');
      if (!(sA.zero && sB.zero)) {
        const partA = bufA.subarray(0, n);
        const partB = bufB.subarray(0, n);
        await Promise.all([read(nodeA, pos, partA), read(nodeB, pos, partB)]);
        if (!sameBytes(partA, partB)) return found(pos + sectorRun(partA, partB, 0, true), 'content');
      }
      pos += n;
    }
  };
  // The larger image past the smaller one's end: it must read as zeros.
  const tail = async (pos: number, end: number, [buf]: [Uint8Array, Uint8Array]) => {
    while (pos < end) {
      const s = await status(larger, pos, end - pos);
      if (!s.zero) {
        const part = buf.subarray(0, s.length);
        await read(larger, pos, part);
        zeros ??= new Uint8Array(buf.length);
        const z = zeros.subarray(0, s.length);
        if (!sameBytes(part, z)) return found(pos + sectorRun(part, z, 0, true), 'content');
      }
      pos += s.length;
    }
  };
  let done = 0;
  await forEachChunk(
    total,
    {
      chunk: PIECE,
      parallel: PARALLEL,
      stopAt: () => best?.offset ?? total,
      signal: options.signal,
      canceled: () => canceled('compare', options.signal!),
      onPiece: (length) => {
        done += length;
        options.onProgress?.(done, total);
      },
    },
    async (offset, length, slot) => {
      const end = offset + length;
      const bufs = buffersOf(slot);
      if (offset < common) await both(offset, Math.min(end, common), bufs);
      if (end > common) await tail(Math.max(offset, common), end, bufs);
    },
  );
  return best;
}
