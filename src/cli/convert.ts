import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { BlockLayer } from '../layer.js';
import { writeAtomically } from './atomic-output.js';
import { inputFiles } from './input-files.js';
import { checkFormat, formatOption, targetOptions } from './target.js';

const CHUNK = 4 * 1024 * 1024;

/**
 * `blocklayer convert [-f FMT] IMAGE OUT.raw [--snapshot S] [--progress]`: writes the guest view as a
 * raw file, leaving holes where the image reads as zeros (block status), like qemu-img convert.
 * The output is written under a temporary name and renamed when complete; an output that is
 * one of the files the input reads (itself, a backing file, through any link) is refused.
 */
export async function convertCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { snapshot: { type: 'string' }, ...formatOption, progress: { type: 'boolean', short: 'p' }, quiet: { type: 'boolean', short: 'q' } },
  });
  if (positionals.length !== 2) throw new Error('usage: blocklayer convert [-f FMT] IMAGE OUT.raw [--snapshot S] [-p] [-q]');
  const [input, output] = positionals;
  const format = checkFormat(values.format);
  const layer = new BlockLayer();
  try {
    const drive = await layer.openDrive(await targetOptions(input, { format, snapshot: values.snapshot }));
    const showBar = !values.quiet && (values.progress ?? process.stderr.isTTY);
    await writeAtomically(
      output,
      async (out) => {
        const bar = showBar ? new cliProgress.SingleBar({ format: 'converting [{bar}] {percentage}% | {value}/{total} MiB', stream: process.stderr }, cliProgress.Presets.shades_classic) : null;
        try {
          await out.truncate(drive.length);
          bar?.start(Math.ceil(drive.length / 2 ** 20), 0);
          const buf = Buffer.allocUnsafe(CHUNK);
          let pos = 0;
          while (pos < drive.length) {
            out.signal.throwIfAborted();
            const s = await drive.blockStatus(pos, Math.min(CHUNK, drive.length - pos));
            if (!s.zero) {
              const part = buf.subarray(0, s.length);
              await drive.read(pos, part);
              await out.write(pos, part);
            }
            pos += s.length;
            bar?.update(Math.floor(pos / 2 ** 20));
          }
          bar?.update(Math.ceil(drive.length / 2 ** 20));
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
