import { BlockError } from '../../errors.js';
import type { BlockNode } from '../../node/node.js';
import type { Qcow2Header } from './header.js';
import * as L from './limits.js';

/** What changing the backing file of an open qcow2 image needs from the instance. */
export interface BackingChangeContext {
  readonly h: Qcow2Header;
  /** The image file (its first cluster is the header). */
  readonly file: BlockNode;
  readonly nodeName: string;
  /** Runs `fn` with the metadata lock held, once pending metadata is on disk (absent: the node is read-only). */
  readonly exclusive: (<T>(fn: () => Promise<T>) => Promise<T>) | undefined;
}

/** One header extension as stored: its type and its data (unpadded). */
interface Extension {
  type: number;
  data: Buffer;
}

/**
 * The header extensions of `v` (a header cluster) other than the backing format, in their order,
 * and where the extension area ends (after the end marker): from the end of the header to the end
 * marker or to the backing file name. The header was validated at open; this reads it again from
 * disk, so every length is checked once more.
 */
function extensionArea(v: Buffer, headerLength: number, nodeName: string): { kept: Extension[]; end: number } {
  const backingOffset = Number(v.readBigUInt64BE(8));
  const limit = backingOffset > 0 && backingOffset <= v.length ? backingOffset : v.length;
  const kept: Extension[] = [];
  let at = headerLength;
  while (at + 8 <= limit) {
    const type = v.readUInt32BE(at);
    const len = v.readUInt32BE(at + 4);
    if (type === L.EXT_END) return { kept, end: at + 8 };
    if (len > limit - at - 8) {
      throw new BlockError('ECORRUPT', `qcow2 header: extension at byte ${at} of ${len} bytes runs past the extension area (byte ${limit})`, { offset: at, node: nodeName });
    }
    if (type !== L.EXT_BACKING_FORMAT) kept.push({ type, data: Buffer.from(v.subarray(at + 8, at + 8 + len)) });
    at += 8 + Math.ceil(len / 8) * 8;
  }
  return { kept, end: Math.min(at, limit) };
}

/**
 * The used bytes of a header cluster naming `name` (or no backing file) in the backing format
 * `format`: QEMU's qcow2_update_header layout: the header fields as they are, the backing format
 * extension first, the other extensions in their order, the end marker, then the name right
 * after it. ENOSPC when that does not fit in the cluster, as QEMU.
 */
export function headerWithBacking(cluster: Uint8Array, headerLength: number, name: string | null, format: string | undefined, nodeName: string): Buffer {
  const v = Buffer.from(cluster.buffer, cluster.byteOffset, cluster.byteLength);
  const cs = v.length;
  const exts = extensionArea(v, headerLength, nodeName).kept;
  if (name !== null && format !== undefined) exts.unshift({ type: L.EXT_BACKING_FORMAT, data: Buffer.from(format) });
  exts.push({ type: L.EXT_END, data: Buffer.alloc(0) });
  const nameBytes = name === null ? Buffer.alloc(0) : Buffer.from(name);
  let size = headerLength;
  for (const e of exts) size += 8 + Math.ceil(e.data.length / 8) * 8;
  if (size + nameBytes.length > cs) {
    throw new BlockError('ENOSPC', `qcow2: the header extensions and the backing file name (${nameBytes.length} bytes) do not fit in the header cluster of ${cs} bytes`, {
      field: 'backing_file',
      node: nodeName,
    });
  }
  const out = Buffer.alloc(size + nameBytes.length);
  v.copy(out, 0, 0, headerLength);
  let at = headerLength;
  for (const e of exts) {
    out.writeUInt32BE(e.type, at);
    out.writeUInt32BE(e.data.length, at + 4);
    e.data.copy(out, at + 8);
    at += 8 + Math.ceil(e.data.length / 8) * 8;
  }
  nameBytes.copy(out, at);
  out.writeBigUInt64BE(BigInt(nameBytes.length > 0 ? at : 0), 8);
  out.writeUInt32BE(nameBytes.length, 16);
  return out;
}

/** Bytes of the header cluster in use: the header, its extensions and the backing file name. */
function usedBytes(v: Buffer, headerLength: number, nodeName: string): number {
  const backingOffset = Number(v.readBigUInt64BE(8));
  const nameEnd = backingOffset > 0 ? backingOffset + v.readUInt32BE(16) : 0;
  return Math.min(v.length, Math.max(extensionArea(v, headerLength, nodeName).end, nameEnd));
}

/**
 * Names `name` (null or '': none) as the image's backing file, in format `format`, in the header
 * of an open image (QEMU qcow2_change_backing_file). The open node keeps the backing child it
 * has: swapping it is the graph's business. The header is rewritten by one write of its used
 * bytes (QEMU rewrites the cluster the same way), the stale bytes of a longer old layout zeroed,
 * then flushed; the caller makes any data the new backing file relies on durable first.
 */
export async function changeBackingFile(c: BackingChangeContext, name: string | null, format: string | undefined): Promise<void> {
  const { h, file, nodeName } = c;
  const backing = name === '' ? null : name;
  if (c.exclusive === undefined) throw new BlockError('EROFS', 'qcow2: change-backing-file: the node is read-only', { node: nodeName });
  if (backing !== null && Buffer.byteLength(backing) > L.MAX_BACKING_NAME) {
    throw new BlockError('EINVAL', `qcow2: the backing file name is longer than ${L.MAX_BACKING_NAME} bytes`, { field: 'backing_file', node: nodeName });
  }
  if (backing !== null && format !== undefined && (format.length === 0 || Buffer.byteLength(format) > L.MAX_BACKING_FORMAT || format.includes('\0'))) {
    throw new BlockError('EINVAL', `qcow2: backing format '${format}' is not a format name of 1 to ${L.MAX_BACKING_FORMAT} bytes`, { field: 'backing_fmt', node: nodeName });
  }
  if (backing?.includes('\0')) throw new BlockError('EINVAL', 'qcow2: the backing file name contains a NUL byte', { field: 'backing_file', node: nodeName });
  // A raw external data file must read as the whole disk: a backing file would change that (QEMU refuses it too).
  if (backing !== null && h.autoclear & L.AUTOCLEAR_DATA_FILE_RAW) {
    throw new BlockError('EINVAL', 'qcow2: an image whose external data file is raw (data_file_raw) cannot have a backing file', { field: 'backing_file', node: nodeName });
  }
  await c.exclusive(async () => {
    const cluster = Buffer.alloc(h.clusterSize);
    await file.read(0, cluster.subarray(0, Math.min(h.clusterSize, file.length)));
    const next = headerWithBacking(cluster, h.headerLength, backing, format, nodeName);
    const span = Math.max(next.length, usedBytes(cluster, h.headerLength, nodeName));
    const out = Buffer.alloc(Math.min(span, h.clusterSize));
    next.copy(out);
    await file.write(0, out);
    await file.flush();
  });
  if (backing === null) {
    delete h.backingFile;
    delete h.backingFormat;
  } else {
    h.backingFile = backing;
    if (format === undefined) delete h.backingFormat;
    else h.backingFormat = format;
  }
}
