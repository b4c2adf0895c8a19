// Raw DEFLATE streams of incompressible data (random bytes, media, encrypted or already
// compressed data), decoded without a zlib stream: zlib stores such data in stored blocks, and
// some builds of it (Node's) code the last few bytes in a short final block with the fixed
// Huffman code. Both are decoded here into the caller's buffer; the same code in Node and the
// browser. Anything else is left to the platform's inflater.

/** Input bytes left after the stored blocks that are decoded here when they are a fixed-code block; more go to the inflater. */
const TAIL_BYTES = 64;

// RFC 1951 3.2.5: base lengths and distances of the length and distance codes, and their extra bits.
const LENGTH_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
const LENGTH_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DISTANCE_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577];
const DISTANCE_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];

/**
 * Decodes a raw DEFLATE stream made of stored blocks, maybe ended by a short block in the fixed
 * Huffman code, into `out` and returns how many bytes it holds, exactly as an inflater would
 * (bytes after the final block are ignored). Returns -1, having maybe written part of `out`,
 * when the stream is anything else: other blocks, a stored block whose lengths disagree, a
 * code or distance an inflater refuses, a stream cut short, or more data than `out` holds. The
 * caller then inflates it in full, which decodes it or reports what is wrong with it.
 */
export function inflateStoredInto(input: Uint8Array, out: Uint8Array): number {
  let at = 0;
  let got = 0;
  for (;;) {
    // Every block starts on a byte: the stream starts there and a stored block ends on one. A
    // stored block's header is 3 bits (BFINAL, BTYPE 00), padding to the byte, LEN and NLEN.
    if (at >= input.length) return -1;
    const head = input[at];
    if ((head & 0b110) !== 0) return (head & 0b111) === 0b011 && input.length - at <= TAIL_BYTES ? fixedTail(input, at, out, got) : -1;
    if (at + 5 > input.length) return -1;
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

/** Bit `pos` of the stream (bits are numbered from each byte's least significant). */
function bitAt(input: Uint8Array, pos: number): number {
  return (input[pos >> 3] >> (pos & 7)) & 1;
}

/** `n` bits from `pos`, least significant first (extra bits of lengths and distances). */
function bitsAt(input: Uint8Array, pos: number, n: number): number {
  let v = 0;
  for (let i = 0; i < n; i++) v |= bitAt(input, pos + i) << i;
  return v;
}

/**
 * The final block at byte `at` (BFINAL 1, BTYPE 01: the fixed code), decoded bit by bit after
 * the `got` bytes of `out` already produced; -1 on anything an inflater would refuse or that
 * runs past the input or `out`.
 */
function fixedTail(input: Uint8Array, at: number, out: Uint8Array, got: number): number {
  const end = input.length * 8;
  let pos = at * 8 + 3;
  for (;;) {
    // A literal/length code: 7, 8 or 9 bits, most significant first (RFC 1951 3.2.6).
    if (pos + 7 > end) return -1;
    let code = 0;
    for (let i = 0; i < 7; i++) code = (code << 1) | bitAt(input, pos++);
    let sym: number;
    if (code < 0b0011000) sym = 256 + code;
    else {
      if (pos >= end) return -1;
      code = (code << 1) | bitAt(input, pos++);
      if (code < 0b11000000) sym = code - 0b00110000;
      else if (code < 0b11001000) sym = 280 + code - 0b11000000;
      else {
        if (pos >= end) return -1;
        code = (code << 1) | bitAt(input, pos++);
        sym = 144 + code - 0b110010000;
      }
    }
    if (sym < 256) {
      if (got >= out.length) return -1;
      out[got++] = sym;
      continue;
    }
    if (sym === 256) return got;
    if (sym > 285) return -1;
    const extra = LENGTH_EXTRA[sym - 257];
    if (pos + extra + 5 > end) return -1;
    const length = LENGTH_BASE[sym - 257] + bitsAt(input, pos, extra);
    pos += extra;
    // A distance code: 5 bits, most significant first; 30 and 31 are invalid.
    let dcode = 0;
    for (let i = 0; i < 5; i++) dcode = (dcode << 1) | bitAt(input, pos++);
    if (dcode > 29) return -1;
    const dextra = DISTANCE_EXTRA[dcode];
    if (pos + dextra > end) return -1;
    const distance = DISTANCE_BASE[dcode] + bitsAt(input, pos, dextra);
    pos += dextra;
    if (distance > got || got + length > out.length) return -1;
    for (let k = 0; k < length; k++, got++) out[got] = out[got - distance];
  }
}
