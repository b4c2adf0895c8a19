import { InterruptedError, type OutputFile, writeAtomically } from './atomic-output.js';
import { creatableFormat, createQcow2OnNode, createSiblings } from './create.js';
import { type CreateOptionsInput, parseCreateOptions, parseFormatOptions, qcow2Settings, roundToSectors } from '../options/create.js';
import { planQcow2 } from '../drivers/qcow2/create-layout.js';
import type { Drive } from '../drive.js';
import { BlockError } from '../errors.js';
import type { BlockLayer, DriveOptions } from '../layer.js';
import type { BlockDriver } from '../node/driver.js';
import type { BlockNode } from '../node/node.js';
import { inputFiles } from './input-files.js';
import { canceled, type InputOptions, openInput } from './open-input.js';
import { convertPipeline } from './convert-pipeline.js';
import { alignedBuffer } from './aligned-buffer.js';
import { DIRECT_ALIGN, DirectOutput } from './direct-output.js';
import { WriteOut } from './convert-writeout.js';

/** qcow2 creation options a converted image takes (qemu-img convert's `-o`); the output is standalone, so no backing or data file. */
export type ConvertCreateOptions = Omit<CreateOptionsInput, 'format' | 'size' | 'backing' | 'backingFormat' | 'dataFile' | 'dataFileRaw'>;

/** Options of {@link convertImage}: the input's (`format`, `snapshot`, `forceShare`), the output's, and the run's. */
export interface ConvertImageOptions extends InputOptions, ConvertCreateOptions {
  /** raw (the default: a sparse file), qcow2, or a format whose driver creates images (vdi, …) (`-O`). */
  outputFormat?: string;
  /** Creation options of an output format other than qcow2 and raw, by qemu-img's `-o` names, checked by its driver's schema. */
  formatOptions?: Record<string, unknown>;
  /**
   * How a raw output is written (qemu-img's `-t`): `writeback` (the default) through the page
   * cache, `none` past it (O_DIRECT, where the file system has it: slower on a quiet host whose
   * page cache absorbs the copy, but it leaves what the host cached alone). Either way the output
   * is flushed before it is renamed into place. Other output formats go through the page cache.
   */
  cache?: ConvertCache;
  /** Compress every data cluster of a qcow2 output (`-c`; zlib, or zstd with `compressionType`). */
  compress?: boolean;
  /** Called as the work goes on with the guest bytes done so far (in order, strictly increasing) and the image's size. */
  onProgress?: (done: number, total: number) => void;
  /**
   * Handle SIGINT/SIGTERM as a command does: remove the partial output and reject with an
   * InterruptedError carrying the shell's exit code (the CLI's choice; false by default).
   */
  handleSignals?: boolean;
}

/** How convert writes a raw output: past the page cache (`none`) or through it (`writeback`). */
export type ConvertCache = 'none' | 'writeback';
const CACHE_MODES: readonly string[] = ['none', 'writeback'];

/** What {@link convertImage} wrote. */
export interface ConvertResult {
  /** The output's guest size in bytes (the input's). */
  virtualSize: number;
  /** The output's format. */
  outputFormat: string;
}

/** Throws when the work must stop: the output's own signal (SIGINT/SIGTERM) or the caller's. */
type Stop = () => void;
/** Called with the guest bytes walked so far. */
type Progress = (done: number) => void;

const NOT_STANDALONE = ['backing', 'backingFormat', 'dataFile', 'dataFileRaw'] as const;

/**
 * `qemu-img convert`: writes the guest view of `input` (a path, `nbd://`, `http(s)://`, `rbd:` or
 * drive options) as a sparse raw file or a new (compressed) qcow2 image at `output`, skipping
 * what reads as zeros. The output is written under a temporary name and renamed when complete;
 * on failure or abort it is removed (abort: ECANCELED, the signal's reason as `cause`). An output
 * that is one of the files the input reads is refused.
 */
export async function convertImage(input: string | DriveOptions, output: string, options: ConvertImageOptions = {}): Promise<ConvertResult> {
  const { format, snapshot, forceShare, layer: given, signal, outputFormat = 'raw', formatOptions, compress = false, onProgress, handleSignals = false, cache = 'writeback', ...create } = options;
  if (!CACHE_MODES.includes(cache)) {
    throw new BlockError('EINVAL', `cache: '${String(cache)}' is not one of ${CACHE_MODES.join(', ')}`, { field: 'cache' });
  }
  if (typeof outputFormat !== 'string' || outputFormat === '') {
    throw new BlockError('EINVAL', `outputFormat: '${String(outputFormat)}' is not a format name`, { field: 'outputFormat' });
  }
  const byDriver = outputFormat !== 'raw' && outputFormat !== 'qcow2';
  for (const k of NOT_STANDALONE) {
    if ((create as Record<string, unknown>)[k] !== undefined) throw new BlockError('ENOTSUP', `${k} is not supported by convert (the output is a standalone image)`, { field: k });
  }
  const qcow2Option = Object.keys(create).find((k) => (create as Record<string, unknown>)[k] !== undefined);
  if (outputFormat === 'raw' && (compress || qcow2Option !== undefined || formatOptions !== undefined)) {
    throw new BlockError('EINVAL', 'compress and creation options need outputFormat qcow2 (raw output has no options)', { field: compress ? 'compress' : 'outputFormat' });
  }
  if (outputFormat === 'qcow2' && formatOptions !== undefined) {
    throw new BlockError('EINVAL', 'formatOptions: qcow2 takes its creation options by name (clusterSize, compat, …)', { field: 'formatOptions' });
  }
  if (byDriver && (compress || qcow2Option !== undefined)) {
    const field = compress ? 'compress' : qcow2Option!;
    throw new BlockError('EINVAL', `${field}: is a qcow2 option, not valid for output format ${outputFormat} (its options go in formatOptions)`, { field });
  }
  const { drive, layer, close } = await openInput(input, { format, snapshot, forceShare, layer: given, signal }, 'convert');
  try {
    // The output format's driver and options are checked before any file is written.
    const driver = byDriver ? creatableFormat(layer, outputFormat, 'outputFormat') : undefined;
    const outputOptions = driver ? parseFormatOptions(driver.create.schema, formatOptions ?? {}) : {};
    const total = drive.length;
    const progress: Progress = (done) => onProgress?.(done, total);
    await writeAtomically(
      output,
      async (out) => {
        const stop: Stop = () => {
          out.signal.throwIfAborted();
          signal?.throwIfAborted();
        };
        stop();
        if (driver) await toFormat(layer, drive, out, driver, outputOptions, stop, progress);
        else if (outputFormat === 'raw') await toRaw(drive, out, cache, stop, progress);
        else await toQcow2(layer, drive, out, create, compress, stop, progress);
      },
      { inputs: inputFiles(drive.node), input: typeof input === 'string' ? input : undefined, handleSignals, siblings: driver !== undefined },
    );
    return { virtualSize: total, outputFormat };
  } catch (e) {
    // writeAtomically removed the partial output; the caller learns it was its own abort
    if (signal?.aborted && !(e instanceof InterruptedError)) {
      throw canceled('convert', signal, `; '${output}' not written (the partial output was removed)`);
    }
    throw e;
  } finally {
    await close();
  }
}

/**
 * Raw output: a sparse file of the guest's size, the data written into it (4 KiB zero runs left
 * as holes); with cache `none` from aligned buffers past the page cache (see DirectOutput), with
 * `writeback` through it, the write-out started as the copy goes (see WriteOut).
 */
async function toRaw(drive: Drive, out: OutputFile, cache: ConvertCache, stop: Stop, progress: Progress): Promise<void> {
  await out.truncate(drive.length);
  const direct = cache === 'none' ? await DirectOutput.open(out) : undefined;
  // without koffi there is no aligned memory, and so no direct write
  const probe = direct ? alignedBuffer(DIRECT_ALIGN, DIRECT_ALIGN) : undefined;
  try {
    if (direct && probe) {
      const allocate = (bytes: number) => alignedBuffer(bytes, DIRECT_ALIGN) ?? Buffer.allocUnsafeSlow(bytes);
      await convertPipeline(drive, { grain: ZERO_GRAIN, write: (offset, data) => direct.write(offset, data) }, { stop, progress, allocate, writes: DIRECT_WRITES });
    } else {
      const writeOut = await WriteOut.open(out.tempPath);
      try {
        const write = writeOut
          ? async (offset: number, data: Uint8Array) => {
              await out.write(offset, data);
              writeOut.wrote(offset + data.length);
            }
          : (offset: number, data: Uint8Array) => out.write(offset, data);
        await convertPipeline(drive, { grain: ZERO_GRAIN, write }, { stop, progress, writes: BUFFERED_WRITES });
      } finally {
        await writeOut?.close();
      }
    }
  } finally {
    await direct?.close();
  }
}

/** Waits for every promise, then rejects with the first failure (none is left unhandled or still running). */
async function settleAll(ps: Promise<void>[]): Promise<void> {
  const r = await Promise.allSettled(ps);
  const failed = r.find((x) => x.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/** Each cluster of a run compressed on its own, all of them in flight (the thread pool deflates them in parallel). */
async function writeCompressedRun(image: BlockNode, offset: number, run: Uint8Array, cs: number): Promise<void> {
  const writes: Promise<void>[] = [];
  for (let at = 0; at < run.length; at += cs) writes.push(image.writeCompressed(offset + at, run.subarray(at, Math.min(at + cs, run.length))));
  await settleAll(writes);
}

/**
 * A new qcow2 image in the temporary file: the layout createImage would write, then the data
 * through our qcow2 driver; clusters that read as zeros stay unallocated (qemu-img convert's
 * default -S 4k does the same at 4 KiB), with compress each data cluster compressed.
 */
async function toQcow2(layer: BlockLayer, drive: Drive, out: OutputFile, create: ConvertCreateOptions, compress: boolean, stop: Stop, progress: Progress): Promise<void> {
  const size = roundToSectors(drive.length);
  const settings = qcow2Settings(parseCreateOptions({ ...create, format: 'qcow2', size }), size);
  if (compress && settings.preallocation !== 'off') {
    throw new BlockError('EINVAL', '-c cannot be combined with preallocation', { field: 'preallocation' });
  }
  await out.truncate(planQcow2(settings).fileLength);
  const file = await layer.openNode({ driver: 'file', filename: out.tempPath, locking: 'off' });
  try {
    await createQcow2OnNode(file, { ...create, format: 'qcow2', size });
    const image = await layer.openNode({ driver: 'qcow2', file });
    try {
      const cs = 2 ** settings.clusterBits;
      const write = compress ? (offset: number, data: Uint8Array) => writeCompressedRun(image, offset, data, cs) : (offset: number, data: Uint8Array) => image.write(offset, data);
      await convertPipeline(drive, { grain: cs, write }, { stop, progress });
      await image.flush();
    } finally {
      await image.unref();
    }
  } finally {
    await file.unref();
  }
}

/** Direct writes at once to a raw output: each waits for the device, so several keep it busy. */
const DIRECT_WRITES = 4;
/**
 * Writes at once to a raw output through the page cache. Each is a copy into the page cache on
 * the libuv pool; one at a time, every piece also waited for the trip to a pool thread and back
 * before the next began (measured, 1 GiB vdi and qcow2 → raw, CLI, alternating, quiet machine:
 * the copy phase took 0.33–0.42 s with one write, 0.32–0.38 s with four). ext4 allocates blocks
 * at write-out (delayed allocation), so the order in which the pieces land changes no layout.
 */
const BUFFERED_WRITES = 4;
/** Zero runs shorter than this are written rather than skipped (qemu-img convert's default -S 4k). */
const ZERO_GRAIN = 4096;
/** The largest output cluster used as the grain (see toFormat). */
const MAX_CLUSTER_GRAIN = 64 * 1024;

/**
 * A new image of a format whose driver creates images: laid out by `driver.create` in the
 * temporary file, opened with the driver, and the input's data written through it; 4 KiB runs
 * that read as zeros are skipped (a new image reads as zeros there).
 */
async function toFormat(layer: BlockLayer, drive: Drive, out: OutputFile, driver: BlockDriver, options: Record<string, unknown>, stop: Stop, progress: Progress): Promise<void> {
  const file = await layer.openNode({ driver: 'file', filename: out.tempPath, locking: 'off' });
  try {
    const size = await driver.create!.create(file, drive.length, options, undefined, createSiblings(layer, out));
    if (size < drive.length) {
      throw new BlockError('EINVAL', `outputFormat: a ${driver.name} image of ${drive.length} bytes got only ${size} bytes`, { field: 'outputFormat' });
    }
    stop();
    const image = await layer.openNode({ driver: driver.name, file });
    try {
      // Runs are cut at the image's grain where it is small (vmdk's 64 KiB: a streamOptimized
      // extent takes whole grains only); the big blocks of vpc/vhdx/vdi would only make pieces huge.
      const cluster = image.info().clusterSize;
      const grain = typeof cluster === 'number' && cluster > ZERO_GRAIN && cluster <= MAX_CLUSTER_GRAIN ? cluster : ZERO_GRAIN;
      await convertPipeline(drive, { grain, write: (offset, data) => image.write(offset, data) }, { stop, progress });
      await image.flush();
    } finally {
      await image.unref();
    }
  } finally {
    await file.unref();
  }
}
