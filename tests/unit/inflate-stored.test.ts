import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { inflateGrain } from '../../src/drivers/vmdk/compressed-grain.js';
import { BlockError } from '../../src/errors.js';
import { inflateRaw as browserInflateRaw } from '../../src/platform/inflate.browser.js';
import { inflateStoredInto } from '../../src/platform/inflate-stored.js';
import { patternBytes } from '../helpers/pattern-bytes.js';

const G = 64 * 1024;

/** A stored block by hand: header byte (BFINAL, BTYPE 00), LEN, NLEN, the data. */
function stored(data: Uint8Array, final: boolean, nlen = ~data.length & 0xffff): Buffer {
  const h = Buffer.alloc(5);
  h[0] = final ? 1 : 0;
  h.writeUInt16LE(data.length, 1);
  h.writeUInt16LE(nlen, 3);
  return Buffer.concat([h, data]);
}

/** What zlib makes of a raw stream with at most `max` bytes out, as the vmdk driver inflates (a stream cut short gives what it held); undefined if it refuses it. */
function zlibSays(raw: Uint8Array, max: number): Buffer | undefined {
  try {
    return zlib.inflateRawSync(raw, { maxOutputLength: max, finishFlush: zlib.constants.Z_SYNC_FLUSH });
  } catch {
    return undefined;
  }
}

/** inflateStoredInto must decode `raw` (and as zlib does). */
function decodes(raw: Uint8Array, expected: Uint8Array, max = G): void {
  const out = new Uint8Array(max);
  const n = inflateStoredInto(raw, out);
  expect(n).toBe(expected.length);
  expect(Buffer.from(out.subarray(0, n)).equals(expected)).toBe(true);
  expect(zlibSays(raw, max)?.equals(expected)).toBe(true);
}

describe('inflateStoredInto', () => {
  it("decodes zlib's own streams of incompressible data: stored blocks, with or without a short fixed-code block at the end", () => {
    let seed = 1;
    for (const size of [0, 1, 2, 100, 4096, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 3, 3 * 16 * 1024, G - 1, G]) {
      for (const level of [0, 1, 6, 9]) {
        for (let k = 0; k < 4; k++) {
          const data = patternBytes(seed++, size);
          // With the zlib header and the Adler-32 trailer after the final block (ignored).
          decodes(zlib.deflateSync(data, { level }).subarray(2), data);
        }
      }
    }
  });

  it('decodes fixed-code blocks after stored ones: literals, lengths 3 to 258, distances up to 32 KiB', () => {
    const prefix = patternBytes(7, 40_000);
    const tails = [
      Buffer.from('a'),
      Buffer.alloc(300, 0x61),
      Buffer.from('abcabcabcabcabcab'),
      // Matches 32000, 10000 and 32668 bytes back into the prefix.
      Buffer.concat([prefix.subarray(8_000, 8_258), prefix.subarray(30_258, 30_268), prefix.subarray(7_600, 7_620)]),
      prefix.subarray(39_990, 40_000),
    ];
    for (const [i, tail] of tails.entries()) {
      // The tail alone (the first three are short), and after the prefix in a stored block (its
      // matches reach into the prefix).
      if (i < 3) decodes(zlib.deflateRawSync(tail, { strategy: zlib.constants.Z_FIXED }), tail);
      const after = zlib.deflateRawSync(tail, { strategy: zlib.constants.Z_FIXED, dictionary: prefix });
      expect(after.length).toBeLessThanOrEqual(64);
      decodes(Buffer.concat([stored(prefix, false), after]), Buffer.concat([prefix, tail]));
    }
  });

  it('turns away what it does not decode: the caller inflates those in full', () => {
    const data = patternBytes(3, 1000);
    const out = new Uint8Array(2000);
    expect(inflateStoredInto(Buffer.concat([stored(data, false), stored(data, true)]), out)).toBe(2000);
    // A dynamic-code block, and a fixed-code block longer than a short tail.
    const dynamic = zlib.deflateRawSync(patternBytes(9, 500).toString('hex'));
    expect(dynamic[0] & 0b111).toBe(0b101);
    expect(inflateStoredInto(dynamic, out)).toBe(-1);
    const longFixed = zlib.deflateRawSync(patternBytes(9, 500).toString('hex'), { strategy: zlib.constants.Z_FIXED });
    expect(longFixed[0] & 0b111).toBe(0b011);
    expect(inflateStoredInto(longFixed, out)).toBe(-1);
    // A non-final fixed-code block.
    expect(inflateStoredInto(Buffer.from([0b010, 0, 0]), out)).toBe(-1);
    // Block type 3 (reserved).
    expect(inflateStoredInto(Buffer.from([0b111, 0, 0, 0, 0]), out)).toBe(-1);
    // NLEN not the complement of LEN.
    expect(inflateStoredInto(stored(data, true, 0), out)).toBe(-1);
    // Cut short: inside a stored block's data or header, before the fixed-code block ends, or with no final block.
    expect(inflateStoredInto(stored(data, true).subarray(0, 900), out)).toBe(-1);
    expect(inflateStoredInto(stored(data, true).subarray(0, 3), out)).toBe(-1);
    const fixed = zlib.deflateRawSync(Buffer.from('hello hello hello'), { strategy: zlib.constants.Z_FIXED });
    expect(inflateStoredInto(fixed.subarray(0, fixed.length - 2), out)).toBe(-1);
    expect(inflateStoredInto(stored(data, false), out)).toBe(-1);
    expect(inflateStoredInto(new Uint8Array(0), out)).toBe(-1);
    // More than the output holds, in stored blocks or in the fixed-code block.
    expect(inflateStoredInto(Buffer.concat([stored(data, false), stored(data, false), stored(data, true)]), out)).toBe(-1);
    expect(inflateStoredInto(Buffer.concat([stored(data, false), stored(data, false), zlib.deflateRawSync(Buffer.alloc(10), { strategy: zlib.constants.Z_FIXED })]), out)).toBe(-1);
    // A distance before the first byte (zlib: invalid distance too far back).
    const far = zlib.deflateRawSync(Buffer.from('xyzxyz'), { strategy: zlib.constants.Z_FIXED, dictionary: Buffer.from('xyz') });
    expect(inflateStoredInto(far, out)).toBe(-1);
  });

  it('never decodes a damaged stream differently from zlib, nor one zlib refuses', () => {
    const streams = [
      zlib.deflateSync(patternBytes(11, G)).subarray(2),
      zlib.deflateRawSync(Buffer.from('abcabcabcabc hello hello'), { strategy: zlib.constants.Z_FIXED }),
      Buffer.concat([stored(patternBytes(5, 3000), false), zlib.deflateRawSync(Buffer.from('0123012301230123'), { strategy: zlib.constants.Z_FIXED, dictionary: patternBytes(5, 3000) })]),
    ];
    let x = 12345;
    const rand = (n: number) => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      return x % n;
    };
    const out = new Uint8Array(G);
    let decoded = 0;
    for (let t = 0; t < 3000; t++) {
      const s = Buffer.from(streams[t % streams.length]);
      // Damage the block headers and the tail, where the decoding decisions are.
      const hot = [0, 1, 2, 3, 4, s.length - 1, s.length - 2, s.length - 3, s.length - 6, s.length - 9, rand(s.length)];
      for (let k = 0, n = 1 + rand(3); k < n; k++) s[hot[rand(hot.length)]] ^= 1 << rand(8);
      const cut = rand(4) === 0 ? s.subarray(0, rand(s.length)) : s;
      const n = inflateStoredInto(cut, out);
      if (n < 0) continue;
      decoded++;
      const z = zlibSays(cut, G);
      expect(z, `trial ${t}`).toBeDefined();
      expect(Buffer.from(out.subarray(0, n)).equals(z!), `trial ${t}`).toBe(true);
    }
    expect(decoded).toBeGreaterThan(100);
  });
});

describe('inflateGrain', () => {
  const refused = (stream: Uint8Array, need = G) => {
    try {
      inflateGrain(stream, new Uint8Array(G), need, 4096);
    } catch (e) {
      expect(e).toBeInstanceOf(BlockError);
      expect((e as BlockError).code).toBe('ECORRUPT');
      expect((e as Error).message).toMatch(/compressed grain at host offset 4096 is corrupt/);
      return;
    }
    throw new Error('not refused');
  };

  it('inflates incompressible and compressible grains alike into the grain buffer', () => {
    for (const data of [patternBytes(21, G), Buffer.alloc(G, 0x5a), Buffer.concat([patternBytes(22, G / 2), Buffer.alloc(G / 2)])]) {
      const out = new Uint8Array(G);
      expect(inflateGrain(zlib.deflateSync(data), out, G, 0)).toBe(G);
      expect(Buffer.from(out).equals(data)).toBe(true);
    }
    // The last grain of a disk may be shorter than a grain.
    const tail = patternBytes(23, 5000);
    const out = new Uint8Array(G);
    expect(inflateGrain(zlib.deflateSync(tail), out, 5000, 0)).toBe(5000);
    expect(Buffer.from(out.subarray(0, 5000)).equals(tail)).toBe(true);
  });

  it('refuses incompressible grains that are too long, too short or inconsistent with ECORRUPT, as compressed ones', () => {
    const header = Buffer.from([0x78, 0x9c]);
    // Two grains of data: past the grain.
    refused(zlib.deflateSync(patternBytes(24, 2 * G)));
    refused(zlib.deflateSync(Buffer.alloc(2 * G)));
    // Fewer bytes than the grain needs.
    refused(zlib.deflateSync(patternBytes(25, G - 1)));
    // A stored block whose NLEN disagrees with LEN, or cut short.
    refused(Buffer.concat([header, stored(patternBytes(26, G / 2), true, 0x1234)]), G / 2);
    refused(Buffer.concat([header, stored(patternBytes(27, 40000), true)]).subarray(0, 20000), 40000);
    // No zlib header.
    refused(Buffer.from([0x12, 0x34, 1, 0, 0, 0xff, 0xff]));
  });
});

describe('inflateRaw of the browser build (fflate)', () => {
  const data = [patternBytes(31, G), Buffer.alloc(G, 0x33), Buffer.from(patternBytes(32, G / 4).toString('hex')), Buffer.from('x')];
  const streams = data.flatMap((d) => [zlib.deflateRawSync(d), zlib.deflateRawSync(d, { level: 0 }), zlib.deflateRawSync(d, { windowBits: 12 }), zlib.deflateRawSync(d, { strategy: zlib.constants.Z_FIXED })]);

  it('inflates what zlib inflates, trailing bytes ignored', () => {
    for (const [i, s] of streams.entries()) {
      const expected = data[i >> 2];
      expect(Buffer.from(browserInflateRaw(s, G)).equals(expected)).toBe(true);
      expect(Buffer.from(browserInflateRaw(Buffer.concat([s, Buffer.from([1, 2, 3, 4])]), G)).equals(expected)).toBe(true);
    }
  });

  it('gives what a stream cut short held (a start of the data), and refuses one that inflates past the limit', () => {
    for (const [i, s] of streams.entries()) {
      const expected = data[i >> 2];
      const part = browserInflateRaw(s.subarray(0, s.length >> 1), G);
      expect(Buffer.from(part).equals(expected.subarray(0, part.length))).toBe(true);
      if (expected.length > 1) expect(() => browserInflateRaw(s, expected.length - 1)).toThrow(/inflates to more than/);
    }
  });
});
