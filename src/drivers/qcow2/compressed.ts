import { Decompress } from 'fzstd';
import { BlockError } from '../../errors.js';
import { deflateRaw, zstdCompress } from '../../platform/compress.js';
import { inflateRaw } from '../../platform/inflate.js';

/** Largest zstd window we let a compressed cluster ask for (bounds the decoder's memory). */
const MAX_ZSTD_WINDOW = 4 * 1024 * 1024;
const ZSTD_MAGIC = 0xfd2fb528;

/**
 * Refuses zstd frames that would make the decoder allocate more than a bounded window or that
 * declare more content than one cluster (the frame header says both before any data).
 */
function checkZstdFrame(input: Uint8Array, clusterSize: number): void {
  const v = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  if (v.length < 6 || v.readUInt32LE(0) !== ZSTD_MAGIC) throw new Error('no zstd frame');
  const fhd = v[4];
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const dictIdBytes = [0, 1, 2, 4][fhd & 3];
  let at = 5;
  let window = 0;
  if (!singleSegment) {
    const wd = v[at++];
    const base = 2 ** (10 + (wd >> 3));
    window = base + (base / 8) * (wd & 7);
  }
  at += dictIdBytes;
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag];
  if (fcsBytes > 0) {
    if (at + fcsBytes > v.length) throw new Error('truncated frame header');
    let fcs = fcsBytes === 1 ? v[at] : fcsBytes === 2 ? v.readUInt16LE(at) + 256 : fcsBytes === 4 ? v.readUInt32LE(at) : Number(v.readBigUInt64LE(at));
    if (fcsBytes === 8 && fcs > Number.MAX_SAFE_INTEGER) fcs = Number.MAX_SAFE_INTEGER;
    if (fcs > clusterSize) throw new Error(`frame declares ${fcs} bytes, more than one cluster`);
    if (singleSegment) window = fcs;
  }
  if (window > MAX_ZSTD_WINDOW) throw new Error(`frame asks for a ${window}-byte window`);
}

/**
 * Inflates one compressed cluster into `out` (exactly one cluster). The output is bounded by
 * the cluster size whatever the input claims; short or broken streams are ECORRUPT. The
 * input may run on past the end of the stream (QEMU pads to whole sectors).
 */
export function decompressCluster(type: 'zlib' | 'zstd', input: Uint8Array, out: Uint8Array, hostOffset: number): void {
  try {
    if (type === 'zlib') {
      const r = inflateRaw(input, out.length);
      if (r.length !== out.length) throw new Error(`inflated to ${r.length} bytes instead of ${out.length}`);
      out.set(r);
    } else {
      checkZstdFrame(input, out.length);
      // Compressed clusters are packed byte by byte: the input runs on into the next cluster's
      // frame (or padding). Keep exactly one cluster of output and ignore what follows.
      let got = 0;
      const d = new Decompress((chunk) => {
        const n = Math.min(chunk.length, out.length - got);
        if (n > 0) out.set(n === chunk.length ? chunk : chunk.subarray(0, n), got);
        got += n;
      });
      try {
        d.push(input, true);
      } catch (e) {
        if (got !== out.length) throw e;
      }
      if (got !== out.length) throw new Error(`decompressed to ${got} bytes instead of ${out.length}`);
    }
  } catch (e) {
    throw new BlockError('ECORRUPT', `qcow2: compressed cluster at host offset ${hostOffset} is corrupt: ${(e as Error).message}`, {
      offset: hostOffset,
      field: 'compressed data',
      cause: e,
    });
  }
}

/**
 * Compresses one cluster as QEMU does (raw deflate for zlib, one zstd frame), or returns
 * undefined when that would not save space (QEMU then writes the cluster uncompressed).
 */
export async function compressCluster(type: 'zlib' | 'zstd', data: Uint8Array): Promise<Uint8Array | undefined> {
  const out = type === 'zlib' ? await deflateRaw(data) : await zstdCompress(data);
  return out.length < data.length ? out : undefined;
}
