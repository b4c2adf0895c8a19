/**
 * A memory model of a disk's guest view, for judging a writable image format: sparse 64 KiB
 * chunks (a missing chunk reads zeros), with write / writeZeroes / discard applied in order.
 * Discard is modelled as "reads zeros afterwards": tests issue it only where the format
 * promises that (whole qcow2 clusters with no backing file, or v3 images with the zero flag).
 */
export const CHUNK = 64 * 1024;

export class DiskModel {
  private readonly chunks = new Map<number, Buffer>();

  constructor(readonly size: number) {}

  /** A model holding `content` from offset 0 (e.g. the image's initial guest view). */
  static from(content: Uint8Array): DiskModel {
    const m = new DiskModel(content.length);
    m.write(0, content);
    return m;
  }

  clone(): DiskModel {
    const m = new DiskModel(this.size);
    for (const [i, c] of this.chunks) m.chunks.set(i, Buffer.from(c));
    return m;
  }

  write(offset: number, data: Uint8Array): void {
    this.check(offset, data.length);
    let done = 0;
    while (done < data.length) {
      const at = offset + done;
      const index = Math.floor(at / CHUNK);
      const within = at - index * CHUNK;
      const n = Math.min(CHUNK - within, data.length - done);
      const piece = data.subarray(done, done + n);
      let chunk = this.chunks.get(index);
      if (chunk === undefined) {
        // Zero pieces need no chunk: keeps the model sparse.
        if (isZero(piece)) {
          done += n;
          continue;
        }
        chunk = Buffer.alloc(CHUNK);
        this.chunks.set(index, chunk);
      }
      chunk.set(piece, within);
      done += n;
    }
  }

  writeZeroes(offset: number, length: number): void {
    this.check(offset, length);
    let done = 0;
    while (done < length) {
      const at = offset + done;
      const index = Math.floor(at / CHUNK);
      const within = at - index * CHUNK;
      const n = Math.min(CHUNK - within, length - done);
      const chunk = this.chunks.get(index);
      if (chunk !== undefined) {
        if (n === CHUNK) this.chunks.delete(index);
        else chunk.fill(0, within, within + n);
      }
      done += n;
    }
  }

  /** Discarded ranges read zeros (see the class comment for when a test may rely on that). */
  discard(offset: number, length: number): void {
    this.writeZeroes(offset, length);
  }

  read(offset: number, length: number): Buffer {
    this.check(offset, length);
    const out = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const at = offset + done;
      const index = Math.floor(at / CHUNK);
      const within = at - index * CHUNK;
      const n = Math.min(CHUNK - within, length - done);
      const chunk = this.chunks.get(index);
      if (chunk !== undefined) chunk.copy(out, done, within, within + n);
      done += n;
    }
    return out;
  }

  /** Whether nothing non-zero lies in [offset, offset+length) (cheap: skips missing chunks). */
  isZeroRange(offset: number, length: number): boolean {
    for (let i = Math.floor(offset / CHUNK); i * CHUNK < offset + length; i++) {
      const chunk = this.chunks.get(i);
      if (chunk === undefined) continue;
      const from = Math.max(offset, i * CHUNK) - i * CHUNK;
      const to = Math.min(offset + length, (i + 1) * CHUNK) - i * CHUNK;
      if (!isZero(chunk.subarray(from, to))) return false;
    }
    return true;
  }

  private check(offset: number, length: number): void {
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new RangeError(`model: range ${offset}+${length} is outside the disk (${this.size} bytes)`);
    }
  }
}

const ZEROS = Buffer.alloc(1 << 20);

export function isZero(b: Uint8Array): boolean {
  for (let o = 0; o < b.length; o += ZEROS.length) {
    const piece = b.subarray(o, Math.min(b.length, o + ZEROS.length));
    if (!Buffer.from(piece.buffer, piece.byteOffset, piece.length).equals(ZEROS.subarray(0, piece.length))) return false;
  }
  return true;
}

/** A reader of `length` bytes at `offset` (our drive, a converted raw file, ...). */
export type RangeReader = (offset: number, length: number) => Promise<Uint8Array> | Uint8Array;

/**
 * Compares a whole disk with the model in `step`-sized pieces. Returns null when equal, else a
 * description of the first differing byte (offset, expected, actual) for the failure message.
 */
export async function firstDifference(model: DiskModel, read: RangeReader, step = 4 << 20): Promise<string | null> {
  for (let o = 0; o < model.size; o += step) {
    const n = Math.min(step, model.size - o);
    const actual = await read(o, n);
    const same = model.isZeroRange(o, n) ? isZero(actual) : Buffer.from(actual.buffer, actual.byteOffset, actual.length).equals(model.read(o, n));
    if (same) continue;
    const expected = model.read(o, n);
    for (let i = 0; i < n; i++) {
      if (actual[i] !== expected[i]) {
        let end = i;
        while (end < n && actual[end] !== expected[end]) end++;
        return `first difference at byte ${o + i} (0x${(o + i).toString(16)}), ${end - i}${end === n ? '+' : ''} bytes differ: expected 0x${expected[i].toString(16)}, got 0x${actual[i].toString(16)}`;
      }
    }
  }
  return null;
}
