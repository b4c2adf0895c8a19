import path from 'node:path';
import { parseArgs } from 'node:util';
import { creatableFormat, createImage } from '../tools/create.js';
import { type CreateOptionsInput, parseFormatOptions } from '../options/create.js';
import { BlockLayer } from '../layer.js';
import { probeFormat } from '../drivers/qcow2/index.js';
import { BlockError } from '../errors.js';
import { parseSize } from '../options/size.js';
import { checkFormat, usageLine } from './target.js';
import { CREATE_HELP } from './help.js';

const USAGE = usageLine(CREATE_HELP);

const bool = (name: string, v: string): boolean => {
  if (v === 'on' || v === 'true' || v === 'yes') return true;
  if (v === 'off' || v === 'false' || v === 'no') return false;
  throw new BlockError('EINVAL', `-o ${name}: '${v}' is not on or off`, { field: name });
};

const size = (name: string, v: string): number => {
  const n = parseSize(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new BlockError('EINVAL', `-o ${name}: '${v}' is not a size (e.g. 64k, 1M)`, { field: name });
  return n;
};

/** qemu-img's -o names → createImage options. */
const O_NAMES: Record<string, (v: string, name: string) => Partial<CreateOptionsInput>> = {
  size: (v, n) => ({ size: size(n, v) }),
  cluster_size: (v, n) => ({ clusterSize: size(n, v) }),
  compat: (v) => ({ compat: v as never }),
  extended_l2: (v, n) => ({ extendedL2: bool(n, v) }),
  compression_type: (v) => ({ compressionType: v as never }),
  lazy_refcounts: (v, n) => ({ lazyRefcounts: bool(n, v) }),
  refcount_bits: (v, n) => {
    if (!/^\d+$/.test(v)) throw new BlockError('EINVAL', `-o ${n}: '${v}' is not a number`, { field: n });
    return { refcountBits: Number(v) };
  },
  data_file: (v) => ({ dataFile: v }),
  data_file_raw: (v, n) => ({ dataFileRaw: bool(n, v) }),
  preallocation: (v) => ({ preallocation: v as never }),
  backing_file: (v) => ({ backing: v }),
  backing_fmt: (v) => ({ backingFormat: v as never }),
};

/** Maps the library's field names back to qemu-img's in messages. */
const QEMU_NAME: Record<string, string> = {
  clusterSize: 'cluster_size',
  extendedL2: 'extended_l2',
  compressionType: 'compression_type',
  lazyRefcounts: 'lazy_refcounts',
  refcountBits: 'refcount_bits',
  dataFile: 'data_file',
  dataFileRaw: 'data_file_raw',
  backing: 'backing_file (-b)',
  backingFormat: 'backing_fmt (-F)',
};

/** The `k=v` pairs of `-o` lists in order (qemu-img's option list; repeated -o flags add up; a bare `k` is `k=on`). */
export function splitO(lists: string[]): [string, string][] {
  const pairs: [string, string][] = [];
  for (const list of lists) {
    for (const item of list.split(',')) {
      if (item === '') continue;
      const eq = item.indexOf('=');
      pairs.push(eq === -1 ? [item, 'on'] : [item.slice(0, eq), item.slice(eq + 1)]);
    }
  }
  return pairs;
}

/** Parses `-o k=v,k=v` for qcow2 and raw. */
export function parseCreateO(lists: string[]): Partial<CreateOptionsInput> {
  let out: Partial<CreateOptionsInput> = {};
  for (const [key, value] of splitO(lists)) {
    const map = O_NAMES[key];
    if (!map) throw new BlockError('EINVAL', `-o: invalid parameter '${key}' (known: ${Object.keys(O_NAMES).join(', ')})`, { field: key });
    out = { ...out, ...map(value, key) };
  }
  return out;
}

/** `-o` of a format whose driver creates images: qemu-img's common names apart, the rest for the driver's schema (as strings). */
export function parseFormatO(lists: string[]): { size?: number; backing?: string; backingFormat?: string; formatOptions: Record<string, string> } {
  const out: { size?: number; backing?: string; backingFormat?: string; formatOptions: Record<string, string> } = { formatOptions: {} };
  for (const [key, value] of splitO(lists)) {
    if (key === 'size') out.size = size(key, value);
    else if (key === 'backing_file') out.backing = value;
    else if (key === 'backing_fmt') out.backingFormat = value;
    else out.formatOptions[key] = value;
  }
  return out;
}

/**
 * `blocklayer create -f FMT [-b BACKING -F FMT] [-o k=v,…] FILE [SIZE]`, spelled like qemu-img
 * create. As current qemu-img (6.1+), a backing file needs its format (-F); the message names
 * the probed format to use.
 */
export async function createCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      format: { type: 'string', short: 'f' },
      backing: { type: 'string', short: 'b' },
      'backing-format': { type: 'string', short: 'F' },
      options: { type: 'string', short: 'o', multiple: true },
      quiet: { type: 'boolean', short: 'q' },
    },
  });
  if (positionals.length < 1 || positionals.length > 2) throw new Error(USAGE);
  const [file, sizeArg] = positionals;
  if (values.format !== undefined && values.format !== 'raw' && values.format !== 'qcow2') return createFormat(values as CreateFlags & { format: string }, file, sizeArg);
  const format = checkFormat(values.format ?? 'raw')!;
  const o = parseCreateO(values.options ?? []);
  if (values.backing !== undefined) o.backing = values.backing;
  if (values['backing-format'] !== undefined) o.backingFormat = values['backing-format'] as never;
  if (sizeArg !== undefined) o.size = size('size', sizeArg);
  if (o.backing !== undefined && o.backingFormat === undefined) {
    const where = path.resolve(path.dirname(path.resolve(file)), o.backing);
    const probed = await probeFormat(where).catch(() => undefined);
    throw new BlockError('EINVAL', `${file}: backing file specified without backing format${probed ? ` (detected format of ${probed}: add -F ${probed})` : ''}`, { field: 'backing_fmt' });
  }
  let created: Awaited<ReturnType<typeof createImage>>;
  try {
    created = await createImage(file, { ...o, format } as CreateOptionsInput, { handleSignals: true });
  } catch (e) {
    if (e instanceof BlockError && e.field && QEMU_NAME[e.field]) {
      throw new BlockError(e.code, e.message.replace(new RegExp(`^${e.field}\\b`), QEMU_NAME[e.field]), { field: QEMU_NAME[e.field], cause: e });
    }
    throw e;
  }
  if (!values.quiet) console.log(formattingLine(file, format, o, created.virtualSize, created.backingFormat));
  return 0;
}

/** The flags createCommand parses. */
interface CreateFlags {
  format?: string;
  backing?: string;
  'backing-format'?: string;
  options?: string[];
  quiet?: boolean;
}

/** `create -f FMT` for a format whose driver creates images (vdi, …): its `-o` checked by the driver's schema. */
async function createFormat(values: CreateFlags & { format: string }, file: string, sizeArg: string | undefined): Promise<number> {
  const o = parseFormatO(values.options ?? []);
  if (values.backing !== undefined) o.backing = values.backing;
  if (values['backing-format'] !== undefined) o.backingFormat = values['backing-format'];
  if (sizeArg !== undefined) o.size = size('size', sizeArg);
  const layer = new BlockLayer();
  try {
    const driver = creatableFormat(layer, values.format);
    const formatOptions = parseFormatOptions(driver.create.schema, o.formatOptions);
    if (o.backing !== undefined && o.backingFormat === undefined) {
      throw new BlockError('EINVAL', `${file}: backing file specified without backing format (add -F FMT)`, { field: 'backing_fmt' });
    }
    const created = await createImage(file, { ...o, format: values.format, formatOptions }, { handleSignals: true, layer });
    if (!values.quiet) {
      const parts = [`Formatting '${file}', fmt=${values.format}`, `size=${created.virtualSize}`];
      if (o.backing !== undefined) parts.push(`backing_file=${o.backing}`, `backing_fmt=${created.backingFormat ?? o.backingFormat}`);
      for (const [k, v] of Object.entries(formatOptions)) if (v !== undefined) parts.push(`${k}=${typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v)}`);
      console.log(parts.join(' '));
    }
    return 0;
  } finally {
    await layer.close();
  }
}

/** qemu-img's "Formatting 'FILE', fmt=… size=…" line. */
function formattingLine(file: string, format: string, o: Partial<CreateOptionsInput>, virtualSize: number, backingFormat?: string): string {
  const parts = [`Formatting '${file}', fmt=${format}`];
  if (format === 'qcow2') {
    parts.push(`cluster_size=${parseSize(o.clusterSize ?? 65536)}`, `extended_l2=${o.extendedL2 ? 'on' : 'off'}`, `compression_type=${o.compressionType ?? 'zlib'}`);
  }
  parts.push(`size=${virtualSize}`);
  if (o.backing !== undefined) parts.push(`backing_file=${o.backing}`, `backing_fmt=${backingFormat ?? o.backingFormat}`);
  if (o.compat !== undefined) parts.push(`compat=${o.compat}`);
  if (o.dataFile !== undefined) parts.push(`data_file=${o.dataFile}`);
  if (o.dataFileRaw) parts.push('data_file_raw=on');
  if (o.preallocation !== undefined && o.preallocation !== 'off') parts.push(`preallocation=${o.preallocation}`);
  if (format === 'qcow2') parts.push(`lazy_refcounts=${o.lazyRefcounts ? 'on' : 'off'}`, `refcount_bits=${o.refcountBits ?? 16}`);
  return parts.join(' ');
}
