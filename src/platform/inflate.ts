// Raw DEFLATE decoding for qcow2's compressed clusters, with Node's zlib. The browser build
// swaps in inflate.browser.ts (fflate), which keeps the same contract.
import { createRequire } from 'node:module';

type Zlib = typeof import('node:zlib');
let zlib: Zlib | undefined;

/** node:zlib, loaded on the first compressed cluster: most runs read or write none, and it costs every start. */
export function loadZlib(): Zlib {
  zlib ??= createRequire(import.meta.url)('node:zlib') as Zlib;
  return zlib;
}

/**
 * Inflates a raw DEFLATE stream into at most `maxOutput` bytes and returns what it produced.
 * Bytes after the end of the stream are ignored; a stream cut short yields what it held up to
 * there (the caller checks the length). Throws on a malformed stream.
 */
export function inflateRaw(input: Uint8Array, maxOutput: number): Uint8Array {
  const z = loadZlib();
  // One output chunk of the most it may produce: no chunks joined (a copy) afterwards.
  const chunkSize = Math.max(z.constants.Z_MIN_CHUNK, Math.min(maxOutput, z.constants.Z_MAX_CHUNK));
  return z.inflateRawSync(input, { maxOutputLength: maxOutput, chunkSize, finishFlush: z.constants.Z_SYNC_FLUSH });
}
