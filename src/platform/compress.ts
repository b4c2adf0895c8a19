// Compression for qcow2's compressed clusters (writes), with Node's zlib and the zstd-napi
// package. The browser build swaps in compress.browser.ts.
import zlib from 'node:zlib';

/** Raw DEFLATE with QEMU's 4 KiB window, on the thread pool (clusters compress in parallel). */
export function deflateRaw(data: Uint8Array): Promise<Uint8Array> {
  return new Promise((resolve, reject) => zlib.deflateRaw(data, { windowBits: 12 }, (err, r) => (err ? reject(err) : resolve(r))));
}

/** One zstd frame; the native module is loaded on first use. */
export async function zstdCompress(data: Uint8Array): Promise<Uint8Array> {
  const { compress } = await import('zstd-napi');
  return compress(data);
}
