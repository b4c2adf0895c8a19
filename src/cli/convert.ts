import { parseArgs } from 'node:util';
import { BlockError } from '../errors.js';
import { convertImage } from '../tools/convert.js';
import { printf2 } from './check.js';
import { parseCreateO, parseFormatO } from './create.js';
import { CONVERT_HELP } from './help.js';
import { checkFormat, forceShareOption, formatOption, usageLine } from './target.js';

const USAGE = usageLine(CONVERT_HELP);

/**
 * `blocklayer convert [-f FMT] [-O raw|qcow2|vdi|…] [-c] [-o opts] IMAGE OUTPUT`: {@link convertImage}
 * with qemu-img convert's flags, and its progress as a bar on a terminal or qemu-img's lines.
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
      cache: { type: 'string', short: 't' },
      compress: { type: 'boolean', short: 'c' },
      options: { type: 'string', short: 'o', multiple: true },
      progress: { type: 'boolean', short: 'p' },
      quiet: { type: 'boolean', short: 'q' },
    },
  });
  if (positionals.length !== 2) throw new Error(USAGE);
  const [input, output] = positionals;
  const format = checkFormat(values.format);
  const named = values['output-format'];
  // Formats other than raw and qcow2 are checked by convertImage against the layer's drivers.
  const byDriver = named !== undefined && named !== 'raw' && named !== 'qcow2';
  const outputFormat = byDriver ? named : (checkFormat(named) ?? 'raw');
  if (outputFormat === 'raw' && (values.compress || values.options)) {
    throw new BlockError('EINVAL', `-c and -o need -O qcow2 or another format with options (raw output has no options)`, { field: values.compress ? 'compress' : 'options' });
  }
  if (byDriver && values.compress) throw new BlockError('EINVAL', `-c: compression needs -O qcow2`, { field: 'compress' });
  const formatO = byDriver ? parseFormatO(values.options ?? []) : undefined;
  if (formatO && (formatO.size !== undefined || formatO.backing !== undefined || formatO.backingFormat !== undefined)) {
    const k = formatO.size !== undefined ? 'size' : formatO.backing !== undefined ? 'backing_file' : 'backing_fmt';
    throw new BlockError('ENOTSUP', `-o: ${k} is not supported by convert (the output is a standalone image of the input's size)`, { field: k });
  }
  const createOptions = byDriver ? {} : parseCreateO(values.options ?? []);
  for (const k of ['backing', 'backingFormat', 'dataFile', 'dataFileRaw'] as const) {
    if (createOptions[k] !== undefined) throw new BlockError('ENOTSUP', `-o: ${k} is not supported by convert (the output is a standalone image)`, { field: k });
  }
  const { format: _, size: __, ...create } = createOptions;
  const cache = values.cache;
  if (cache !== undefined && cache !== 'none' && cache !== 'writeback') {
    throw new BlockError('EINVAL', `-t: '${cache}' is not a cache mode convert takes (none, writeback)`, { field: 'cache' });
  }
  // A bar on a terminal; asked with -p where stderr is not one, qemu-img's "    (x.xx/100%)" on stdout.
  const showBar = !values.quiet && (values.progress ?? process.stderr.isTTY) && process.stderr.isTTY;
  const showText = !values.quiet && values.progress === true && !process.stderr.isTTY;
  // cli-progress is loaded only when a bar is shown
  const bar = showBar ? await progressBar() : null;
  const text = showText ? qemuProgress((s) => process.stdout.write(s)) : null;
  const mib = (n: number) => Math.ceil(n / 2 ** 20);
  let started = false;
  try {
    const { virtualSize } = await convertImage(input, output, {
      format,
      snapshot: values.snapshot,
      forceShare: values['force-share'],
      outputFormat,
      compress: values.compress ?? false,
      ...(cache === undefined ? {} : { cache }),
      ...create,
      ...(formatO ? { formatOptions: formatO.formatOptions } : {}),
      handleSignals: true,
      onProgress(done, total) {
        if (!started) {
          bar?.start(mib(total), 0);
          started = true;
        }
        bar?.update(mib(done));
        text?.update(total === 0 ? 100 : (done * 100) / total);
      },
    });
    if (!started) bar?.start(mib(virtualSize), 0);
    bar?.update(mib(virtualSize));
    text?.end();
  } finally {
    bar?.stop();
  }
  return 0;
}

/** A progress bar on stderr ("converting [████░░] 40% | 40/100 MiB"). */
async function progressBar() {
  const { default: cliProgress } = await import('cli-progress');
  return new cliProgress.SingleBar({ format: 'converting [{bar}] {percentage}% | {value}/{total} MiB', stream: process.stderr }, cliProgress.Presets.shades_classic);
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
