import { BlockError } from '../../errors.js';
import type { BlockNode } from '../../node/node.js';
import { deflateZlib } from '../../platform/compress.js';
import { inflateRaw } from '../../platform/inflate.js';
import { inflateStoredInto } from '../../platform/inflate-stored.js';
import * as L from './limits.js';

/**
 * Inflates one grain's zlib stream (QEMU compresses grains with zlib's compress(): a 2-byte
 * header, deflate, adler32) into `out` (one grain) and returns its length; `need` bytes must
 * come out (the last grain of a disk may be shorter). A stream that would inflate past the
 * grain is ECORRUPT. A stream of incompressible data (stored blocks) is copied, not inflated.
 */
export function inflateGrain(stream: Uint8Array, out: Uint8Array, need: number, host: number): number {
  if (stream.length < 2) throw corruptStream(host, 'no zlib header');
  const cmf = stream[0];
  const flg = stream[1];
  if ((cmf & 0x0f) !== 8 || (cmf >> 4) > 7 || ((cmf << 8) | flg) % 31 !== 0 || (flg & 0x20) !== 0) throw corruptStream(host, 'no zlib header');
  const deflated = stream.subarray(2);
  let n = inflateStoredInto(deflated, out);
  if (n < 0) {
    try {
      const r = inflateRaw(deflated, out.length);
      out.set(r);
      n = r.length;
    } catch (e) {
      throw corruptStream(host, (e as Error).message, e);
    }
  }
  if (n < need) throw corruptStream(host, `inflated to ${n} bytes, the grain needs ${need}`);
  return n;
}

function corruptStream(host: number, why: string, cause?: unknown): BlockError {
  return new BlockError('ECORRUPT', `vmdk: compressed grain at host offset ${host} is corrupt: ${why}`, { offset: host, field: 'compressed grain', cause });
}

function corruptEntry(host: number, why: string): BlockError {
  return new BlockError('ECORRUPT', `vmdk: compressed grain at host offset ${host}: ${why}`, { offset: host, field: 'grain table entry' });
}

/**
 * The zlib stream of a grain (what QEMU's compress() makes): header, raw deflate (4 KiB window),
 * Adler-32, all made on the thread pool; the header is written as this driver always wrote it
 * (no level hint).
 */
export async function deflateGrain(data: Uint8Array): Promise<Uint8Array> {
  const out = await deflateZlib(data);
  const cmf = 0x48; // deflate, 4 KiB window (windowBits 12)
  out[0] = cmf;
  out[1] = 31 - ((cmf << 8) % 31);
  return out;
}

/** Read buffers kept for reuse; reads beyond this many at once get their own. */
const POOLED_READ_BUFFERS = 16;
/** Bytes read past a grain's size with its marker: a deflated grain of random data is a little larger than the grain. */
const READ_SLACK = 1024;

/**
 * Reads compressed grains (streamOptimized) into one grain buffer kept for the driver's life,
 * which holds the last grain inflated: sequential reads of a stream hit it. Reads run side by
 * side: each reads the marker and the deflated data in one request, into a pooled buffer, then
 * inflates and copies its bytes out in one synchronous step (no other read can touch the grain
 * buffer in between).
 */
export class CompressedGrains {
  /** Host offset of the grain in `grain` (-1: none, or a failed inflate left it half written). */
  private cachedHost = -1;
  /** Bytes of `grain` the cached grain inflated to. */
  private cachedBytes = 0;
  private readonly grain: Uint8Array;
  private readonly pool: Uint8Array[] = [];
  private readonly bufferBytes: number;

  constructor(
    private readonly file: BlockNode,
    grainBytes: number,
    /** Grains sit behind a marker (lba, size); without one, the stream fills the grain's space. */
    private readonly markers: boolean,
  ) {
    this.grain = new Uint8Array(grainBytes);
    this.bufferBytes = L.GRAIN_MARKER_BYTES + grainBytes + READ_SLACK;
  }

  /** Copies bytes [from, from + part.length) of the grain at `host` (which must inflate to at least `need` bytes) into `part`. */
  async read(host: number, need: number, from: number, part: Uint8Array): Promise<void> {
    if (this.cachedHost === host) return this.copyOut(from, part);
    const pooled = this.pool.pop() ?? new Uint8Array(this.bufferBytes);
    try {
      const stream = await this.readStream(host, pooled);
      if (this.cachedHost === host) return this.copyOut(from, part);
      this.cachedHost = -1;
      this.cachedBytes = inflateGrain(stream, this.grain, need, host);
      this.cachedHost = host;
      this.copyOut(from, part);
    } finally {
      if (this.pool.length < POOLED_READ_BUFFERS) this.pool.push(pooled);
    }
  }

  /** Bytes [from, from + part.length) of the cached grain into `part`, zeros past its end. */
  private copyOut(from: number, part: Uint8Array): void {
    const end = Math.min(from + part.length, this.cachedBytes);
    if (end > from) part.set(this.grain.subarray(from, end));
    if (end - from < part.length) part.fill(0, Math.max(0, end - from));
  }

  /** The zlib stream of the grain at `host`, read into `pooled` (or a buffer of its own if larger). */
  private async readStream(host: number, pooled: Uint8Array): Promise<Uint8Array> {
    const fileSize = this.file.length;
    const grainBytes = this.grain.length;
    if (!this.markers) {
      const size = Math.min(grainBytes, fileSize - host);
      if (size <= 0) throw corruptEntry(host, `it is beyond the end of the file (${fileSize} bytes)`);
      const stream = pooled.subarray(0, size);
      await this.file.read(host, stream);
      return stream;
    }
    if (host + L.GRAIN_MARKER_BYTES > fileSize) throw corruptEntry(host, `its marker is beyond the end of the file (${fileSize} bytes)`);
    const first = pooled.subarray(0, Math.min(pooled.length, fileSize - host));
    await this.file.read(host, first);
    // The marker's size field: a little-endian u32 at byte 8 (after the lba).
    const size = (first[8] | (first[9] << 8) | (first[10] << 16)) + first[11] * 0x1000000;
    const start = host + L.GRAIN_MARKER_BYTES;
    // QEMU reads at most two grains of compressed data.
    if (size === 0 || size > 2 * grainBytes) throw corruptEntry(host, `marker size ${size} is not in 1 to ${2 * grainBytes}`);
    if (start + size > fileSize) throw corruptEntry(host, `its ${size} bytes run past the end of the file (${fileSize} bytes)`);
    if (L.GRAIN_MARKER_BYTES + size <= first.length) return first.subarray(L.GRAIN_MARKER_BYTES, L.GRAIN_MARKER_BYTES + size);
    // Larger than the grain and the slack: read on its own (bounded above).
    const stream = new Uint8Array(size);
    await this.file.read(start, stream);
    return stream;
  }
}
