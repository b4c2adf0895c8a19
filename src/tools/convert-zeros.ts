/** Zeros compared against in one memcmp; a grain larger than this is compared in several. */
const ZEROS = Buffer.alloc(64 * 1024);

/** Whether bytes [from, to) of `b` are all zero: the ends first (random data fails there at once), then memcmp against zeros. */
export function zeroRange(b: Buffer, from: number, to: number): boolean {
  if (to <= from) return true;
  if (b[from] !== 0 || b[to - 1] !== 0) return false;
  for (let at = from; at < to; at += ZEROS.length) {
    const end = Math.min(to, at + ZEROS.length);
    if (b.compare(ZEROS, 0, end - at, at, end) !== 0) return false;
  }
  return true;
}

/**
 * The runs of `data` that hold non-zero bytes, as [from, to) pairs, in whole grains of `grain`
 * bytes (the last one may be shorter): an all-zero grain splits runs, qemu-img convert's sparse
 * detection (`-S`), which leaves such grains unwritten in an output that reads as zeros.
 */
export function dataRuns(data: Buffer, grain: number): [number, number][] {
  const runs: [number, number][] = [];
  let run = -1;
  for (let at = 0; at < data.length; at += grain) {
    const end = Math.min(at + grain, data.length);
    const zero = zeroRange(data, at, end);
    if (!zero && run < 0) run = at;
    else if (zero && run >= 0) {
      runs.push([run, at]);
      run = -1;
    }
  }
  if (run >= 0) runs.push([run, data.length]);
  return runs;
}
