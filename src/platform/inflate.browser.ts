// Raw DEFLATE decoding in the browser build, with fflate (pure JS, synchronous, as the qcow2
// read path needs); the same contract as inflate.ts.
import { Inflate } from 'fflate';

export function inflateRaw(input: Uint8Array, maxOutput: number): Uint8Array {
  const out = new Uint8Array(maxOutput);
  let got = 0;
  let over = false;
  const inflater = new Inflate((chunk) => {
    const n = Math.min(chunk.length, maxOutput - got);
    out.set(chunk.subarray(0, n), got);
    got += n;
    if (chunk.length > n) over = true;
  });
  // Not final: a stream cut short gives what it held, as zlib's sync flush does.
  inflater.push(input, false);
  if (over) throw new Error(`inflates to more than ${maxOutput} bytes`);
  return out.subarray(0, got);
}
