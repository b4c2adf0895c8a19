import { parseArgs } from 'node:util';
import { BlockError } from '../errors.js';
import { preallocMode, resizeImage } from '../tools/resize.js';

/**
 * `blocklayer resize [-f FMT] [--shrink] [--preallocation=MODE] [-q] IMAGE [+|-]SIZE`: changes an
 * image's virtual size, like qemu-img resize (whose flags these are; it has no -U: a resize writes).
 */
export async function resizeCommand(args: string[]): Promise<number> {
  // A last argument like -512M is the size, not an option (qemu-img takes it out before getopt too).
  const rest = [...args];
  const negative = rest.length > 1 && /^-\d/.test(rest.at(-1)!) ? rest.pop() : undefined;
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      format: { type: 'string', short: 'f' },
      shrink: { type: 'boolean' },
      preallocation: { type: 'string' },
      quiet: { type: 'boolean', short: 'q' },
    },
  });
  if (negative !== undefined) positionals.push(negative);
  if (positionals.length < 2) throw new BlockError('EINVAL', 'Not enough arguments');
  if (positionals.length > 2) throw new BlockError('EINVAL', 'Expecting image file name and size');
  const [image, size] = positionals as [string, string];
  const controller = new AbortController();
  const stop = () => controller.abort(new Error('interrupted'));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await resizeImage(image, size, {
      format: values.format,
      shrink: values.shrink,
      preallocation: values.preallocation === undefined ? undefined : preallocMode(values.preallocation),
      signal: controller.signal,
    });
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  if (!values.quiet) console.log('Image resized.');
  return 0;
}
