// Raw DEFLATE streams made of stored blocks only: what zlib emits for data it cannot compress
// (random bytes, media, encrypted or already compressed data). Their bytes are copied out block
// by block, without a decoder, into the caller's buffer; the same code in Node and the browser.

/**
 * Copies the data of a raw DEFLATE stream of stored blocks into `out` and returns how many
 * bytes it holds, as an inflater would (bytes after the final block are ignored). Returns -1,
 * having maybe written part of `out`, when the stream is anything else: a compressed block, a
 * stored block whose lengths disagree, a stream cut short, or more data than `out` holds. The
 * caller then inflates it in full, which decodes it or reports what is wrong with it.
 */
export function copyStoredBlocks(input: Uint8Array, out: Uint8Array): number {
  let at = 0;
  let got = 0;
  for (;;) {
    // Every block starts on a byte: the stream starts there and a stored block ends on one. Its
    // header is 3 bits (BFINAL, BTYPE 00), padding to the byte, then LEN and its complement NLEN.
    if (at + 5 > input.length) return -1;
    const head = input[at];
    if ((head & 0b110) !== 0) return -1;
    const len = input[at + 1] | (input[at + 2] << 8);
    if ((len ^ (input[at + 3] | (input[at + 4] << 8))) !== 0xffff) return -1;
    at += 5;
    if (at + len > input.length || got + len > out.length) return -1;
    if (len > 0) out.set(input.subarray(at, at + len), got);
    got += len;
    at += len;
    if ((head & 1) !== 0) return got;
  }
}
