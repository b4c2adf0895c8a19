import { parseArgs } from 'node:util';
import { BlockError } from '../errors.js';
import type { DriveOptions } from '../layer.js';
import { splitQemuOpts } from '../options/drive-string.js';
import { parseSize } from '../options/size.js';
import { type BitmapOperation, bitmapImage } from '../tools/bitmap.js';

const OPTIONS = {
  add: { type: 'boolean', multiple: true },
  remove: { type: 'boolean', multiple: true },
  clear: { type: 'boolean', multiple: true },
  enable: { type: 'boolean', multiple: true },
  disable: { type: 'boolean', multiple: true },
  merge: { type: 'string', multiple: true },
  'source-file': { type: 'string', short: 'b' },
  'source-format': { type: 'string', short: 'F' },
  granularity: { type: 'string', short: 'g' },
  format: { type: 'string', short: 'f' },
  'image-opts': { type: 'boolean' },
  object: { type: 'string', multiple: true },
} as const;

const OPERATIONS = new Set(['add', 'remove', 'clear', 'enable', 'disable', 'merge']);

/** Options followed by a value, as getopt takes it even when it starts with '-' (`-g -1` is a bad granularity, not an option). */
const TAKES_VALUE: Record<string, string> = { '-b': '-b', '-F': '-F', '-g': '-g', '-f': '-f', '--merge': '--merge=', '--object': '--object=' };

/** `-g VALUE` as `-gVALUE` (`--merge VALUE` as `--merge=VALUE`), so parseArgs reads VALUE as the value whatever it looks like. */
function joinValues(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      out.push(...args.slice(i));
      break;
    }
    const prefix = TAKES_VALUE[a];
    if (prefix !== undefined && i + 1 < args.length) out.push(prefix + args[++i]!);
    else out.push(a);
  }
  return out;
}

/** `-g`: a byte count with qemu-img's suffixes, or its error (qemu-img cvtnum). */
function granularityOf(text: string): number {
  const n = parseSize(text);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new BlockError('EINVAL', 'Invalid granularity specified. You may use k, M, G, T, P or E suffixes for\nkilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.', { field: 'granularity' });
  }
  return n;
}

/** `--image-opts`: FILENAME is a QemuOpts string of the node tree (`driver=qcow2,file.driver=file,file.filename=a.qcow2`). */
function imageOptsTree(text: string): DriveOptions {
  const root: Record<string, unknown> = {};
  for (const [key, value] of splitQemuOpts(text)) {
    const path = key.split('.');
    let at = root;
    for (const part of path.slice(0, -1)) {
      const next = at[part];
      if (typeof next === 'string') throw new BlockError('EINVAL', `--image-opts: '${part}' is both a value and a set of options`, { field: key });
      if (next === undefined) at[part] = {};
      at = at[part] as Record<string, unknown>;
    }
    at[path.at(-1)!] = value;
  }
  if (typeof root.driver !== 'string') throw new BlockError('EINVAL', "--image-opts: the options need a 'driver'", { field: 'driver' });
  return root as DriveOptions;
}

/**
 * `blocklayer bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)...
 * [-b SOURCE_FILE [-F SOURCE_FMT]] [-g GRANULARITY] [--image-opts | -f FMT] FILENAME BITMAP`:
 * qemu-img bitmap's syntax; the operations run in the order given.
 */
export async function bitmapCommand(args: string[]): Promise<number> {
  const { values, positionals, tokens } = parseArgs({ args: joinValues(args), options: OPTIONS, allowPositionals: true, strict: true, tokens: true });
  const operations: BitmapOperation[] = [];
  for (const t of tokens) {
    if (t.kind !== 'option' || !OPERATIONS.has(t.name)) continue;
    operations.push(t.name === 'merge' ? { op: 'merge', source: t.value ?? '' } : { op: t.name as 'add' });
  }
  if (values.object !== undefined) {
    throw new BlockError('ENOTSUP', '--object: user-creatable objects (secrets of encrypted images) are not supported', { field: 'object' });
  }
  const granularity = values.granularity === undefined ? undefined : granularityOf(values.granularity);
  if (operations.length === 0) throw new BlockError('EINVAL', 'Need at least one of --add, --remove, --clear, --enable, --disable, or --merge', { field: 'operations' });
  // Checked again by the tool; here first, so that the argument count is judged after them, as qemu-img does.
  if (granularity && !operations.some((o) => o.op === 'add')) throw new BlockError('EINVAL', 'granularity only supported with --add', { field: 'granularity' });
  if (values['source-format'] !== undefined && values['source-file'] === undefined) throw new BlockError('EINVAL', '-F only supported with -b', { field: 'sourceFormat' });
  if (values['source-file'] !== undefined && !operations.some((o) => o.op === 'merge')) {
    throw new BlockError('EINVAL', 'Merge bitmap source file only supported with --merge', { field: 'sourceFile' });
  }
  if (positionals.length !== 2) throw new BlockError('EINVAL', 'Expecting filename and bitmap name', { field: 'arguments' });
  // qemu-img finds this conflict as it opens the image, after the arguments.
  if (values['image-opts'] && values.format !== undefined) throw new BlockError('EINVAL', '--image-opts and --format are mutually exclusive', { field: 'format' });
  const [filename, bitmap] = positionals as [string, string];
  await bitmapImage(values['image-opts'] ? imageOptsTree(filename) : filename, bitmap, operations, {
    ...(values.format === undefined ? {} : { format: values.format }),
    ...(granularity === undefined ? {} : { granularity }),
    ...(values['source-file'] === undefined ? {} : { sourceFile: values['source-file'] }),
    ...(values['source-format'] === undefined ? {} : { sourceFormat: values['source-format'] }),
  });
  return 0;
}
