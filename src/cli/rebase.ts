import { parseArgs } from 'node:util';
import { BlockError } from '../errors.js';
import { rebaseImage } from '../tools/rebase.js';
import { qemuProgress } from './convert.js';
import { REBASE_HELP } from './help.js';
import { checkFormat, forceShareOption, usageLine } from './target.js';

/**
 * `blocklayer rebase [-f FMT] [-u] [-p] [-q] [-U] -b BACKING [-F FMT] IMAGE`: changes the backing
 * file of a qcow2 image, like qemu-img rebase (safe mode copies the data that would change).
 */
export async function rebaseCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      format: { type: 'string', short: 'f' },
      backing: { type: 'string', short: 'b' },
      'backing-format': { type: 'string', short: 'F' },
      unsafe: { type: 'boolean', short: 'u' },
      progress: { type: 'boolean', short: 'p' },
      quiet: { type: 'boolean', short: 'q' },
      ...forceShareOption,
    },
  });
  if (positionals.length !== 1) throw new BlockError('EINVAL', `Expecting one image file name\n${usageLine(REBASE_HELP)}`);
  // qemu-img: without -b only unsafe mode makes sense (it then removes the backing file)
  if (values.backing === undefined && !values.unsafe) throw new BlockError('EINVAL', `Must specify backing file (-b) or use unsafe mode (-u)\n${usageLine(REBASE_HELP)}`);
  const format = checkFormat(values.format);
  const progress = values.progress && !values.quiet ? qemuProgress((s) => process.stdout.write(s)) : null;
  const controller = new AbortController();
  const stop = () => controller.abort(new Error('interrupted'));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await rebaseImage(positionals[0], values.backing ?? null, {
      format,
      backingFormat: values['backing-format'],
      unsafe: values.unsafe,
      forceShare: values['force-share'],
      signal: controller.signal,
      onProgress: progress ? (done, total) => progress.update(total === 0 ? 100 : (done * 100) / total) : undefined,
    });
    progress?.end();
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  return 0;
}
