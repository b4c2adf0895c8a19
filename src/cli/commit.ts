import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { commitImage } from '../tools/commit.js';
import { usageLine } from './target.js';
import { COMMIT_HELP } from './help.js';


/** `blocklayer commit [-d] [-p] [-q] OVERLAY`: merges a qcow2 overlay into its backing file, like qemu-img commit. */
export async function commitCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { keep: { type: 'boolean', short: 'd' }, progress: { type: 'boolean', short: 'p' }, quiet: { type: 'boolean', short: 'q' }, format: { type: 'string', short: 'f' } },
  });
  if (positionals.length !== 1) throw new Error(usageLine(COMMIT_HELP));
  if (values.format !== undefined && values.format !== 'qcow2') throw new Error(`-f ${values.format}: only qcow2 overlays can be committed`);
  const bar = values.progress && !values.quiet ? new cliProgress.SingleBar({ format: 'committing [{bar}] {percentage}%', stream: process.stderr }, cliProgress.Presets.shades_classic) : null;
  const controller = new AbortController();
  const stop = () => controller.abort(new Error('interrupted'));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    bar?.start(100, 0);
    await commitImage(positionals[0], {
      keep: values.keep,
      signal: controller.signal,
      onProgress: (done, total) => bar?.update(Math.floor((done / total) * 100)),
    });
  } finally {
    bar?.stop();
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  if (!values.quiet) console.log('Image committed.');
  return 0;
}
