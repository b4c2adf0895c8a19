import type { Drive } from '../drive.js';
import { BlockError } from '../errors.js';
import { dataRuns } from './convert-zeros.js';

/** Where {@link convertPipeline} writes: the output as a raw file or an image node, seen as runs of data. */
export interface ConvertSink {
  /**
   * Bytes of the zero-detection grain: aligned runs of this many zero bytes are not written
   * (the new output reads as zeros there; qemu-img convert's `-S 4k`, a qcow2 output's cluster).
   * Pieces are cut at multiples of it. A power of two.
   */
  readonly grain: number;
  /** Writes one run of data at `offset` (grain-aligned, a multiple of the grain unless it ends the image). */
  write(offset: number, data: Uint8Array): Promise<void>;
}

/** How {@link convertPipeline} runs. */
export interface PipelineOptions {
  /** Bytes per piece at most (rounded up to a multiple of the grain). */
  chunk?: number;
  /** Pieces read ahead at once, each in its own buffer of the pool (qemu-img convert runs 8 coroutines). */
  depth?: number;
  /** Throws when the work must stop; called before each piece is begun and after each is written. */
  stop: () => void;
  /** Called with the guest bytes done so far, in order: strictly increasing, ending at the drive's length. */
  progress: (done: number) => void;
  /**
   * Pieces written at once (default 1: each write ends before the next begins). Pieces still
   * begin their writes in guest order (a piece's runs one after another) and progress still
   * counts them in order; more than one suits an output
   * where a write waits for the device (a raw file written past the page cache).
   */
  writes?: number;
  /** Makes one buffer of the pool (default: Buffer.allocUnsafeSlow; a direct output wants aligned memory). */
  allocate?: (bytes: number) => Buffer;
}

/**
 * Bytes per piece. qemu-img reads 2 MiB per request; measured here (qcow2 → raw, 256 MiB, in
 * process, alternating) 1 MiB pieces took about half the CPU time of 2 MiB ones: a piece still
 * in the CPU's cache when it is written costs the kernel's copy into the page cache much less.
 * Measured again on 1 GiB (perf record of three in-process converts each, ext4): the kernel's
 * copy into the page cache (copy_folio_from_iter_atomic) took about 190 samples at 1 MiB,
 * 775 at 512 KiB and 3500 at 2 MiB; with 2 MiB or 4 MiB pieces most rounds' system time was
 * about 3× that of 1 MiB ones. Keep 1 MiB unless a profile says otherwise.
 */
export const PIECE = 1024 * 1024;
/** Pieces in flight (qemu-img convert runs 8 coroutines); with PIECE, a pool of 8 MiB. */
export const DEPTH = 8;
/** Marks a promise's failure as handled where it is awaited later. */
const ignore = () => {};
/** The most one block status asks for (2^52: a safe integer however often it doubles). */
const MAX_WINDOW = 2 ** 52;
/** A piece larger than this is refused (a grain this large would be a bug, not an input). */
const MAX_PIECE = 64 * 1024 * 1024;

/** One range of the guest to read and write; `through` is the guest offset done once it is written (the zeros before it included). */
interface Piece {
  offset: number;
  length: number;
  through: number;
  buf: Buffer;
  read: Promise<unknown>;
  /** Set once the piece's write has begun. */
  written: Promise<void> | undefined;
}

/** The next range of data to read, found from block status; holes and zero extents are stepped over. */
interface Span {
  offset: number;
  length: number;
}

/**
 * Walks the drive's block status from the front and hands out the ranges that may hold data,
 * rounded out to the grain and cut at multiples of `chunk`; adjacent data extents (a format's
 * small ones) join into one range up to the next cut, so a contiguous run is one read.
 *
 * Each status asks for `window` bytes, doubled after each zero extent (a sparse image is
 * stepped over in few calls) and back to `window` after data: asked for the whole rest of a
 * dense qcow2, the driver walks an L2 table of 8192 entries (tens of milliseconds before V8 has
 * optimized it) before the first read begins. qemu-img's qcow2 answers at most an L2 slice (32 MiB).
 */
class Planner {
  private pos = 0;
  /** Data found but not yet handed out: [start, end). */
  private start = 0;
  private end = 0;
  /** Bytes the next status asks for. */
  private asked: number;
  constructor(
    private readonly drive: Drive,
    private readonly grain: number,
    private readonly chunk: number,
    private readonly window: number,
  ) {
    this.asked = window;
  }

  /** Where the walk has reached: everything before it is handed out or known to read as zeros. */
  get reached(): number {
    return this.end > this.start ? this.start : this.pos;
  }

  async next(): Promise<Span | undefined> {
    const total = this.drive.length;
    for (;;) {
      if (this.end > this.start) {
        const boundary = (Math.floor(this.start / this.chunk) + 1) * this.chunk;
        // Data right after the pending range joins it, up to the chunk's boundary.
        if (this.end < boundary && this.pos === this.end && this.pos < total) {
          await this.step();
          if (this.pos === this.end) continue;
        }
        const cut = Math.min(this.end, boundary);
        const span = { offset: this.start, length: cut - this.start };
        this.start = cut;
        return span;
      }
      if (this.pos >= total) return undefined;
      await this.step();
    }
  }

  /** Reads the next extent: data joins the pending range (rounded out to the grain), zeros are stepped over. */
  private async step(): Promise<void> {
    const total = this.drive.length;
    const s = await this.drive.blockStatus(this.pos, Math.min(total - this.pos, this.asked));
    if (!(s.length > 0)) throw new BlockError('EIO', `convert: block status at ${this.pos} gave an empty extent`, { offset: this.pos });
    const extentEnd = Math.min(total, this.pos + s.length);
    if (s.zero) {
      this.pos = extentEnd;
      this.asked = Math.min(this.asked * 2, MAX_WINDOW);
      return;
    }
    this.asked = this.window;
    if (this.end <= this.start) this.start = Math.max(this.end, Math.floor(this.pos / this.grain) * this.grain);
    this.end = Math.min(total, Math.ceil(extentEnd / this.grain) * this.grain);
    this.pos = this.end;
  }
}

/**
 * Copies the guest view of `drive` into `sink`: block status is walked ahead, the ranges that
 * may hold data are read `depth` at a time into a pool of buffers (made once), and written in
 * guest order (one after another unless `writes` allows more at once), each as its runs of non-zero grains (all-zero grains are not
 * written). Writing in order keeps an output's allocation order the guest's, as qemu-img
 * convert does without `-W`. The walk and the reads go on beside the writes: a write whose
 * piece is read begins at once, not after the next block status (a format's status asks its
 * file with lseek on the thread pool, behind the reads). On the first failure nothing new is
 * begun; the reads and writes in flight settle before it is thrown.
 */
export async function convertPipeline(drive: Drive, sink: ConvertSink, options: PipelineOptions): Promise<void> {
  const { stop, progress } = options;
  const grain = sink.grain;
  if (!Number.isInteger(grain) || grain <= 0 || (grain & (grain - 1)) !== 0 || grain > MAX_PIECE) {
    throw new BlockError('EINVAL', `convert: a grain of ${grain} bytes is not a power of two up to ${MAX_PIECE}`, { field: 'grain' });
  }
  const chunk = Math.ceil(Math.max(options.chunk ?? PIECE, grain) / grain) * grain;
  const depth = Math.max(1, Math.floor(options.depth ?? DEPTH));
  const writes = Math.min(depth, Math.max(1, Math.floor(options.writes ?? 1)));
  if (chunk > MAX_PIECE) throw new BlockError('EINVAL', `convert: pieces of ${chunk} bytes exceed ${MAX_PIECE}`, { field: 'chunk' });
  const total = drive.length;
  const planner = new Planner(drive, grain, chunk, chunk * depth);
  const allocate = options.allocate ?? Buffer.allocUnsafeSlow;
  const free: Buffer[] = [];
  /** Pieces read or being read, in guest order; queue[0 .. begun) are being written. */
  const queue: Piece[] = [];
  let done = 0;
  /** Where the walk was when the last piece was queued (or the end): before it, all is queued, written or zeros. */
  let walked = 0;
  /** False once the reader queues no more pieces (the walk ended, failed or was told to stop). */
  let reading = true;
  /** Set by the first failure, or when the writer leaves: the reader begins nothing more. */
  let halted = false;
  let failure: { error: unknown } | undefined;
  /** Throws the first failure, if any (a function: the reader sets it while the writer awaits). */
  const check = () => {
    if (failure !== undefined) throw failure.error;
  };
  /** The writer waiting for a piece, and the reader waiting for a buffer (each resolves a promise made only to wait). */
  let wakeWriter: (() => void) | undefined;
  let wakeReader: (() => void) | undefined;
  const wake = (w: (() => void) | undefined) => w?.();
  const report = (at: number) => {
    if (at > done) {
      done = at;
      progress(done);
    }
    stop();
  };

  const reader = async () => {
    try {
      for (;;) {
        if (queue.length >= depth && !halted) {
          await new Promise<void>((r) => {
            wakeReader = r;
          });
          wakeReader = undefined;
          continue;
        }
        if (halted) return;
        stop();
        const span = await planner.next();
        if (halted) return;
        if (span === undefined) {
          walked = total;
          return;
        }
        const buf = free.pop() ?? allocate(chunk);
        const read = drive.read(span.offset, buf.subarray(0, span.length));
        // Handled here; its failure is thrown when the piece's turn to be written comes.
        read.catch(ignore);
        queue.push({ offset: span.offset, length: span.length, through: span.offset + span.length, buf, read, written: undefined });
        walked = planner.reached;
        wake(wakeWriter);
      }
    } catch (e) {
      failure ??= { error: e };
      halted = true;
    } finally {
      reading = false;
      wake(wakeWriter);
    }
  };

  const readerDone = reader();
  let begun = 0;
  try {
    for (;;) {
      check();
      const head = queue[0];
      if (head === undefined) {
        if (!reading) break;
        await new Promise<void>((r) => {
          wakeWriter = r;
        });
        wakeWriter = undefined;
        continue;
      }
      // The zeros stepped over before this piece count as done.
      if (begun === 0) report(head.offset);
      // Begin the writes whose turn has come, in guest order, up to `writes` at once.
      while (begun < queue.length && begun < writes) {
        const piece = queue[begun];
        await piece.read;
        stop();
        piece.written = writeRuns(sink, piece, grain);
        // Handled here; its failure is thrown when it is the oldest write.
        piece.written.catch(ignore);
        begun++;
      }
      await head.written;
      queue.shift();
      begun--;
      free.push(head.buf);
      wake(wakeReader);
      // With nothing queued, the walk's position is done too (zeros after the last piece).
      report(queue.length > 0 ? head.through : Math.max(head.through, walked));
    }
    check();
    report(total);
  } catch (e) {
    failure ??= { error: e };
    throw failure.error;
  } finally {
    // Whatever happens, no read or write is left running on a buffer.
    halted = true;
    wake(wakeReader);
    await readerDone;
    await Promise.allSettled(queue.flatMap((p) => (p.written ? [p.read, p.written] : [p.read])));
  }
}

/** Writes the piece's runs of non-zero grains, one after another. */
async function writeRuns(sink: ConvertSink, piece: Piece, grain: number): Promise<void> {
  const data = piece.buf.subarray(0, piece.length);
  for (const [from, to] of dataRuns(data, grain)) await sink.write(piece.offset + from, data.subarray(from, to));
}
