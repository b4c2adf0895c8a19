import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { createQcow2OnNode } from '../create/index.js';
import { type CreateOptionsInput, parseCreateOptions, qcow2Settings, roundToSectors } from '../create/options.js';
import { planQcow2 } from '../create/qcow2-layout.js';
import type { Drive } from '../drive.js';
import { BlockError } from '../errors.js';
import { BlockLayer } from '../layer.js';
import type { BlockNode } from '../node/node.js';
import { type OutputFile, writeAtomically } from '../atomic-output.js';
import { printf2 } from './check.js';
import { parseCreateO } from './create.js';
import { inputFiles } from './input-files.js';
import { checkFormat, forceShareOption, formatOption, targetOptions, usageLine, withForceShare } from './target.js';

const CHUNK = 4 * 1024 * 1024;
/** Windows of CHUNK bytes converted at once (qemu-img convert runs 8 coroutines by default). */
const WINDOWS = 4;
export const CONVERT_HELP = `usage: blocklayer convert [-f FMT] [-U] [-O raw|qcow2] [-c] [-o k=v,…] [--snapshot S] [-p] [-q] IMAGE OUTPUT
The guest view of IMAGE as a sparse raw file or a new (compressed) qcow2 image, like qemu-img convert.
The output is written under a temporary name and renamed when complete.

  -f, --format FMT          input format (raw, qcow2); given, it is used without probing
  -U, --force-share         read the input sharing everything (an image another process holds read-write)
  -O, --output-format FMT   output format: raw (the default) or qcow2
  -c, --compress            compress every data cluster (-O qcow2)
  -o, --options k=v,…       qcow2 creation options (cluster_size, compression_type, compat, …)
  --snapshot S              convert snapshot S (id or name) of a qcow2 image
  -p, --progress            show progress (the default on a terminal); where stderr is
                            not a terminal, qemu-img's "    (x.xx/100%)" lines on stdout
  -q, --quiet               no progress
  -h, --help                this help`;
const USAGE = usageLine(CONVERT_HELP);

/** Called with the guest bytes walked so far. */
type Progress = (pos: number) => void;

/**
 * `blocklayer convert [-f FMT] [-O raw|qcow2] [-c] [-o opts] IMAGE OUTPUT`: writes the guest view as a
 * sparse raw file or a new qcow2 image (compressed with -c: zlib, or zstd with -o compression_type=zstd),
 * skipping what reads as zeros, like qemu-img convert. The output is written under a temporary name
 * and renamed when complete; an output that is one of the files the input reads is refused.
 */
export async function convertCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      snapshot: { type: 'string' },
      ...formatOption,
      ...forceShareOption,
      'output-format': { type: 'string', short: 'O' },
      compress: { type: 'boolean', short: 'c' },
      options: { type: 'string', short: 'o', multiple: true },
      progress: { type: 'boolean', short: 'p' },
      quiet: { type: 'boolean', short: 'q' },
    },
  });
  if (positionals.length !== 2) throw new Error(USAGE);
  const [input, output] = positionals;
  const format = checkFormat(values.format);
  const outFormat = checkFormat(values['output-format']) ?? 'raw';
  if (outFormat === 'raw' && (values.compress || values.options)) {
    throw new BlockError('EINVAL', `-c and -o need -O qcow2 (raw output has no options)`, { field: values.compress ? 'compress' : 'options' });
  }
  const createOptions = parseCreateO(values.options ?? []);
  for (const k of ['backing', 'backingFormat', 'dataFile', 'dataFileRaw'] as const) {
    if (createOptions[k] !== undefined) throw new BlockError('ENOTSUP', `-o: ${k} is not supported by convert (the output is a standalone image)`, { field: k });
  }
  const layer = new BlockLayer();
  try {
    const drive = await layer.openDrive(withForceShare(await targetOptions(input, { format, snapshot: values.snapshot }), values['force-share']));
    // A bar on a terminal; asked with -p where stderr is not one, qemu-img's "    (x.xx/100%)" on stdout.
    const showBar = !values.quiet && (values.progress ?? process.stderr.isTTY) && process.stderr.isTTY;
    const showText = !values.quiet && values.progress === true && !process.stderr.isTTY;
    const mib = (n: number) => Math.ceil(n / 2 ** 20);
    await writeAtomically(
      output,
      async (out) => {
        const bar = showBar ? new cliProgress.SingleBar({ format: 'converting [{bar}] {percentage}% | {value}/{total} MiB', stream: process.stderr }, cliProgress.Presets.shades_classic) : null;
        const text = showText ? qemuProgress((s) => process.stdout.write(s)) : null;
        bar?.start(mib(drive.length), 0);
        const progress: Progress = (pos) => {
          bar?.update(mib(pos));
          text?.update(drive.length === 0 ? 100 : (pos * 100) / drive.length);
        };
        try {
          if (outFormat === 'raw') await toRaw(drive, out, progress);
          else await toQcow2(layer, drive, out, { ...createOptions, compress: values.compress ?? false }, progress);
          bar?.update(mib(drive.length));
          text?.end();
        } finally {
          bar?.stop();
        }
      },
      { inputs: inputFiles(drive.node), input },
    );
  } finally {
    await layer.close();
  }
  return 0;
}

/**
 * qemu-img's progress output (util/qemu-progress.c, as convert -p uses it): "    (%3.2f/100%)"
 * and a carriage return, printed at 0, whenever the percentage moved by more than 1 since the
 * last print, and at 100; at the end 100 once more and a newline.
 */
export function qemuProgress(write: (s: string) => void): { update(percent: number): void; end(): void } {
  let last = 0;
  const print = (p: number) => write(`    (${printf2(p)}/100%)\r`);
  print(0);
  return {
    update(percent) {
      const p = Math.min(100, percent);
      if (p > last + 1 || p < last - 1 || p === 100 || p === 0) {
        last = p;
        print(p);
      }
    },
    end() {
      print(100);
      write('\n');
    },
  };
}

/**
 * Walks the guest view in windows of CHUNK bytes, WINDOWS of them in flight (each worker with its
 * own buffer), so reading one window overlaps writing another, as qemu-img convert's coroutines
 * do. The first failure stops every worker; all settle before it is thrown. Progress counts the
 * windows finished.
 */
async function eachWindow(
  length: number,
  signal: AbortSignal,
  progress: Progress,
  fn: (start: number, end: number, buf: Buffer) => Promise<void>,
): Promise<void> {
  let next = 0;
  let done = 0;
  let failed = false;
  const worker = async () => {
    const buf = Buffer.allocUnsafe(CHUNK);
    try {
      for (let w = next; w < length && !failed; w = next) {
        next += CHUNK;
        signal.throwIfAborted();
        const end = Math.min(w + CHUNK, length);
        await fn(w, end, buf);
        done += end - w;
        progress(done);
      }
    } catch (e) {
      failed = true;
      throw e;
    }
  };
  await settleAll(Array.from({ length: WINDOWS }, worker));
}

/** Sparse raw output: each window's extents that may hold data (block status skips holes and zero clusters) are read and written. */
async function toRaw(drive: Drive, out: OutputFile, progress: Progress): Promise<void> {
  await out.truncate(drive.length);
  await eachWindow(drive.length, out.signal, progress, async (w, end, buf) => {
    for (let pos = w; pos < end; ) {
      const s = await drive.blockStatus(pos, end - pos);
      if (!s.zero) {
        const part = buf.subarray(pos - w, pos - w + s.length);
        await drive.read(pos, part);
        out.signal.throwIfAborted();
        await out.write(pos, part);
      }
      pos += s.length;
    }
  });
}

const isZero = (b: Uint8Array): boolean => {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
};

/** Waits for every promise, then rejects with the first failure (none is left unhandled or still running). */
async function settleAll(ps: Promise<void>[]): Promise<void> {
  const r = await Promise.allSettled(ps);
  const failed = r.find((x) => x.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/** Writes one window: compressed, every data cluster on its own, all in flight; plain, one write per run of data clusters. */
async function writeWindow(image: BlockNode, w: number, window: Uint8Array, cs: number, compress: boolean): Promise<void> {
  const writes: Promise<void>[] = [];
  let run = -1;
  for (let at = 0; at < window.length; at += cs) {
    const piece = window.subarray(at, Math.min(at + cs, window.length));
    const data = !isZero(piece);
    if (compress) {
      if (data) writes.push(image.writeCompressed(w + at, piece));
    } else if (data && run < 0) run = at;
    else if (!data && run >= 0) {
      writes.push(image.write(w + run, window.subarray(run, at)));
      run = -1;
    }
  }
  if (run >= 0) writes.push(image.write(w + run, window.subarray(run)));
  await settleAll(writes);
}

/** Whether any extent of [start, end) may hold non-zero data. */
async function hasData(drive: Drive, start: number, end: number): Promise<boolean> {
  for (let pos = start; pos < end; ) {
    const s = await drive.blockStatus(pos, end - pos);
    if (!s.zero) return true;
    pos += s.length;
  }
  return false;
}

/**
 * A new qcow2 image in the temporary file: the layout createImage would write, then the data
 * through our qcow2 driver, cluster by cluster; clusters that read as zeros stay unallocated
 * (qemu-img convert's default -S 4k does the same at 4 KiB), with -c each data cluster compressed.
 */
async function toQcow2(layer: BlockLayer, drive: Drive, out: OutputFile, options: Partial<CreateOptionsInput> & { compress: boolean }, progress: Progress): Promise<void> {
  const { compress, ...create } = options;
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
      // Windows of whole clusters (CHUNK is a multiple of every cluster size): a window with any
      // data is read whole (holes read as zeros), then written cluster by cluster.
      await eachWindow(drive.length, out.signal, progress, async (w, end, buf) => {
        if (!(await hasData(drive, w, end))) return;
        const window = buf.subarray(0, end - w);
        await drive.read(w, window);
        await writeWindow(image, w, window, cs, compress);
      });
      await image.flush();
    } finally {
      await image.unref();
    }
  } finally {
    await file.unref();
  }
}
