import { parseArgs } from 'node:util';
import { BlockError } from '../errors.js';
import { CompareError, compareImages } from '../tools/compare.js';
import { qemuProgress } from './convert.js';
import { COMPARE_HELP } from './help.js';
import { checkFormat, forceShareOption, usageLine } from './target.js';

/** qemu-img compare's exit codes. */
export const COMPARE_EXIT = { identical: 0, different: 1, open: 2, 'block-status': 3, read: 4 } as const;

/**
 * `blocklayer compare [-f FMT] [-F FMT] [-s] [-q] [-p] [-U] A B`: qemu-img compare's messages on
 * stdout and its exit codes (0 identical, 1 different, 2 an image did not open, 3 block status
 * failed, 4 a read failed).
 */
export async function compareCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      format: { type: 'string', short: 'f' },
      'format-b': { type: 'string', short: 'F' },
      strict: { type: 'boolean', short: 's' },
      quiet: { type: 'boolean', short: 'q' },
      progress: { type: 'boolean', short: 'p' },
      ...forceShareOption,
    },
  });
  if (positionals.length !== 2) throw new BlockError('EINVAL', `Expecting two image file names\n${usageLine(COMPARE_HELP)}`);
  const formatA = checkFormat(values.format);
  const formatB = values['format-b'] === undefined ? undefined : checkFormat(values['format-b']);
  const quiet = values.quiet === true;
  const say = (line: string) => {
    if (!quiet) console.log(line);
  };
  const progress = values.progress && !quiet ? qemuProgress((s) => process.stdout.write(s)) : null;
  const controller = new AbortController();
  const stop = () => controller.abort(new Error('interrupted'));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const r = await compareImages(positionals[0], positionals[1], {
      formatA,
      formatB,
      strict: values.strict,
      forceShare: values['force-share'],
      signal: controller.signal,
      onProgress: progress ? (done, total) => progress.update(total === 0 ? 100 : (done * 100) / total) : undefined,
    });
    progress?.end();
    if (r.reason === 'size') {
      say('Strict mode: Image size mismatch!');
      return COMPARE_EXIT.different;
    }
    if (r.sizes[0] !== r.sizes[1]) say('Warning: Image size mismatch!');
    if (r.identical) {
      say('Images are identical.');
      return COMPARE_EXIT.identical;
    }
    say(r.reason === 'block-status' ? `Strict mode: Offset ${r.firstDifference} block status mismatch!` : `Content mismatch at offset ${r.firstDifference}!`);
    return COMPARE_EXIT.different;
  } catch (e) {
    if (!(e instanceof CompareError)) throw e;
    console.error(`blocklayer compare: ${e.message}`);
    return COMPARE_EXIT[e.stage];
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
