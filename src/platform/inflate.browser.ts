// Raw DEFLATE decoding in the browser build, with fflate (pure JS, synchronous, as the qcow2
// read path needs); the same contract as inflate.ts.
import { Inflate, inflateSync } from 'fflate';

export function inflateRaw(input: Uint8Array, maxOutput: number): Uint8Array {
  // One byte more than allowed: fflate drops what does not fit in a buffer it is given but
  // counts it, so a stream that inflates past `maxOutput` fills it.
  const out = new Uint8Array(maxOutput + 1);
  let got: Uint8Array;
  try {
    got = inflateSync(input, { out });
  } catch (e) {
    // Cut short (fflate's code 0): decode again as a stream, which gives what it held.
    if ((e as { code?: unknown }).code === 0) return inflateCutShort(input, maxOutput);
    // A stored block past the end of `out`.
    if (e instanceof RangeError) throw new Error(`inflates to more than ${maxOutput} bytes`);
    throw e;
  }
  if (got.length > maxOutput) throw new Error(`inflates to more than ${maxOutput} bytes`);
  return got;
}

/** A stream cut short gives what it held, as zlib's sync flush does (the slower streaming decoder: it copies every chunk). */
function inflateCutShort(input: Uint8Array, maxOutput: number): Uint8Array {
  const out = new Uint8Array(maxOutput);
  let got = 0;
  let over = false;
  const inflater = new Inflate((chunk) => {
    const n = Math.min(chunk.length, maxOutput - got);
    out.set(chunk.subarray(0, n), got);
    got += n;
    if (chunk.length > n) over = true;
  });
  // Not final: the stream ends where the input does.
  inflater.push(input, false);
  if (over) throw new Error(`inflates to more than ${maxOutput} bytes`);
  return out.subarray(0, got);
}
