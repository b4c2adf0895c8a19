/** How {@link forEachChunk} walks a range. */
export interface ChunkPoolOptions {
  /** Bytes per piece. */
  chunk: number;
  /** Pieces in flight at once; each worker has a `slot` (0 … parallel-1) for its own buffers. */
  parallel: number;
  /** No piece starting at or after this offset is begun any more (a compare that found its first difference). */
  stopAt?: () => number;
  /** Checked before each piece: an aborted signal stops new pieces and rejects with `canceled()`. */
  signal?: AbortSignal;
  /** The error an aborted signal rejects with. */
  canceled?: () => Error;
  /** Called after each piece with its length. */
  onPiece?: (length: number) => void;
}

/**
 * Runs `work(offset, length, slot)` over [0, size) in pieces of `chunk` bytes, begun in offset
 * order, `parallel` at a time. After a failure no new piece is begun; the promise rejects with
 * the first failure once the pieces in flight have settled.
 */
export async function forEachChunk(size: number, options: ChunkPoolOptions, work: (offset: number, length: number, slot: number) => Promise<void>): Promise<void> {
  const { chunk, signal } = options;
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (slot: number) => {
    while (failure === undefined && next < size && (options.stopAt === undefined || next < options.stopAt())) {
      if (signal?.aborted) {
        failure = { error: options.canceled?.() ?? signal.reason };
        return;
      }
      const offset = next;
      const length = Math.min(chunk, size - offset);
      next += length;
      try {
        await work(offset, length, slot);
        options.onPiece?.(length);
      } catch (e) {
        failure ??= { error: e };
      }
    }
  };
  const workers: Promise<void>[] = [];
  for (let slot = 0; slot < Math.max(1, options.parallel); slot++) workers.push(worker(slot));
  await Promise.all(workers);
  if (failure !== undefined) throw failure.error;
}

/** True when `a` and `b` hold the same bytes (both of the same length). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

const SECTOR = 512;

/**
 * Length of the leading run of 512-byte sectors of `a` and `b` (equal lengths) whose sameness is
 * `same` (the last sector may be shorter): qemu-img's compare_buffers, which compare and rebase
 * report and copy by.
 */
export function sectorRun(a: Uint8Array, b: Uint8Array, from: number, same: boolean): number {
  let at = from;
  while (at < a.length) {
    const end = Math.min(at + SECTOR, a.length);
    if (sameBytes(a.subarray(at, end), b.subarray(at, end)) !== same) break;
    at = end;
  }
  return at - from;
}
