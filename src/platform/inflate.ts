// Raw DEFLATE decoding for qcow2's compressed clusters, with Node's zlib. The browser build
// swaps in inflate.browser.ts (fflate), which keeps the same contract.
import zlib from 'node:zlib';

/**
 * Inflates a raw DEFLATE stream into at most `maxOutput` bytes and returns what it produced.
 * Bytes after the end of the stream are ignored; a stream cut short yields what it held up to
 * there (the caller checks the length). Throws on a malformed stream.
 */
export function inflateRaw(input: Uint8Array, maxOutput: number): Uint8Array {
  return zlib.inflateRawSync(input, { maxOutputLength: maxOutput, finishFlush: zlib.constants.Z_SYNC_FLUSH });
}
