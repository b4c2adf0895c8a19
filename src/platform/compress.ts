// Compression for qcow2's compressed clusters (writes), with Node's zlib and the optional
// zstd-napi package. The browser build swaps in compress.browser.ts.
import { createRequire } from 'node:module';
import { BlockError } from '../errors.js';
import { loadZlib } from './inflate.js';

/** Raw DEFLATE with QEMU's 4 KiB window, on the thread pool (clusters compress in parallel). */
export function deflateRaw(data: Uint8Array): Promise<Uint8Array> {
  const zlib = loadZlib();
  return new Promise((resolve, reject) => zlib.deflateRaw(data, { windowBits: 12 }, (err, r) => (err ? reject(err) : resolve(r))));
}

/** A zlib stream (2-byte header, DEFLATE with a 4 KiB window, Adler-32: vmdk's grains), on the thread pool. */
export function deflateZlib(data: Uint8Array): Promise<Uint8Array> {
  const zlib = loadZlib();
  return new Promise((resolve, reject) => zlib.deflate(data, { windowBits: 12 }, (err, r) => (err ? reject(err) : resolve(r))));
}

type ZstdCompress = (data: Uint8Array) => Uint8Array;

let zstd: Promise<ZstdCompress> | undefined;

/** zstd-napi's compress, imported on first use; an ENOTSUP naming the package where it is not installed or its addon does not load. */
function loadZstd(): Promise<ZstdCompress> {
  // require, not import(): the bundled command runs as a script, where import() has no loader
  zstd ??= new Promise<ZstdCompress>((resolve) => resolve((createRequire(import.meta.url)('zstd-napi') as typeof import('zstd-napi')).compress)).catch(
    (e: unknown) => {
      const reason = e instanceof Error ? e.message.split('\n')[0] : String(e);
      throw new BlockError(
        'ENOTSUP',
        `writing zstd-compressed clusters needs the optional package 'zstd-napi', which did not load (${reason}); install it with install scripts on (npm install zstd-napi, or npm rebuild zstd-napi where it came without its binary) or use compression_type zlib`,
        { field: 'compression_type', cause: e },
      );
    },
  );
  return zstd;
}

/** One zstd frame; the native module is loaded on first use (reading zstd clusters needs none: fzstd). */
export async function zstdCompress(data: Uint8Array): Promise<Uint8Array> {
  const compress = await loadZstd();
  return compress(data);
}
