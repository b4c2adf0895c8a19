import * as z from 'zod';
import * as L from '../drivers/qcow2/limits.js';
import { sizeSchema } from './size.js';
import { parseOptions, zodToBlockError } from './zod-error.js';
import type { Qcow2CreateSettings } from '../drivers/qcow2/create-layout.js';

export type { Qcow2CreateSettings } from '../drivers/qcow2/create-layout.js';

/** Preallocation modes (QEMU PreallocMode): metadata only, or also the file's space (falloc) or zeros written (full). */
export const PREALLOCATION_MODES = ['off', 'metadata', 'falloc', 'full'] as const;
/** One of {@link PREALLOCATION_MODES}. */
export type Preallocation = (typeof PREALLOCATION_MODES)[number];

const QCOW2_ONLY = ['backing', 'backingFormat', 'clusterSize', 'compat', 'extendedL2', 'compressionType', 'lazyRefcounts', 'refcountBits', 'dataFile', 'dataFileRaw'] as const;

/**
 * Options of {@link createImage}, with qemu-img create's rules for qcow2 (block/qcow2.c
 * qcow2_co_create): every violation is an EINVAL naming the field.
 */
export const createOptionsSchema = z
  .object({
    /** Image format to create. */
    format: z.enum(['qcow2', 'raw']),
    /** Virtual size (bytes or '10G'); rounded up to whole 512-byte sectors as qemu-img does. Default: the backing file's size. */
    size: sizeSchema().optional(),
    /** Backing file name as stored in the header (relative names are relative to the new image). */
    backing: z.string().min(1, 'must not be empty').max(L.MAX_BACKING_NAME, `must be at most ${L.MAX_BACKING_NAME} bytes`).optional(),
    /** Format of the backing file; probed when omitted (qemu-img create now refuses that: the CLI does too). */
    backingFormat: z.enum(['qcow2', 'raw']).optional(),
    /** qcow2 cluster size (power of two, 512 B … 2 MiB; default 64 KiB: qemu-img `cluster_size`). */
    clusterSize: sizeSchema().optional(),
    /** qcow2 version: `1.1`/`v3` (default) or `0.10`/`v2` (qemu-img `compat`). */
    compat: z.enum(['0.10', '1.1', 'v2', 'v3']).optional(),
    /** Subclusters: 32 per cluster (qemu-img `extended_l2`, v3, clusters of 16 KiB or more). */
    extendedL2: z.boolean().optional(),
    /** Algorithm of compressed clusters (qemu-img `compression_type`; zstd needs v3). */
    compressionType: z.enum(['zlib', 'zstd']).optional(),
    /** Defer refcount updates until a clean close (qemu-img `lazy_refcounts`, v3). */
    lazyRefcounts: z.boolean().optional(),
    /** Bits per refcount, a power of two 1 … 64 (default 16; qemu-img `refcount_bits`). */
    refcountBits: z.number().int('must be a whole number').optional(),
    /** External data file name as stored in the header (created beside the image by createImage). */
    dataFile: z.string().min(1, 'must not be empty').optional(),
    /** The data file is a valid raw image by itself (qemu-img `data_file_raw`). */
    dataFileRaw: z.boolean().optional(),
    /** What to allocate up front (qemu-img `preallocation`): `off`, `metadata`, `falloc`, `full`. */
    preallocation: z.enum(PREALLOCATION_MODES).default('off'),
  })
  .strict()
  .superRefine((o, ctx) => {
    const fail = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message });
    if (o.format === 'raw') {
      for (const k of QCOW2_ONLY) if (o[k] !== undefined) fail(k, `is a qcow2 option, not valid for format raw`);
      return;
    }
    const v3 = o.compat === undefined || o.compat === '1.1' || o.compat === 'v3';
    const needV3 = '(use compat 1.1)';
    const cs = o.clusterSize ?? 65536;
    if (cs < 512 || cs > 2 * 1024 * 1024 || (cs & (cs - 1)) !== 0) fail('clusterSize', `${cs} is not a power of two between 512 and 2 MiB`);
    const rb = o.refcountBits ?? 16;
    if (rb < 1 || rb > 64 || (rb & (rb - 1)) !== 0) fail('refcountBits', `${rb} is not a power of two between 1 and 64`);
    else if (!v3 && rb !== 16) fail('refcountBits', `widths other than 16 need compat 1.1`);
    if (o.lazyRefcounts && !v3) fail('lazyRefcounts', `needs compat 1.1 ${needV3}`);
    if (o.extendedL2 && !v3) fail('extendedL2', `needs compat 1.1 ${needV3}`);
    if (o.extendedL2 && cs < 16384) fail('extendedL2', `needs a cluster size of at least 16384 bytes (cluster size ${cs})`);
    if (o.compressionType === 'zstd' && !v3) fail('compressionType', `zstd needs compat 1.1 ${needV3}`);
    if (o.dataFile !== undefined && !v3) fail('dataFile', `external data files need compat 1.1 ${needV3}`);
    if (o.dataFileRaw && o.dataFile === undefined) fail('dataFileRaw', 'requires dataFile');
    if (o.dataFileRaw && o.backing !== undefined) fail('dataFileRaw', 'cannot be used with a backing file');
    if (o.backingFormat !== undefined && o.backing === undefined) fail('backingFormat', 'needs a backing file');
    if (o.backing !== undefined && o.preallocation !== 'off' && !o.extendedL2) {
      fail('preallocation', 'with a backing file needs extendedL2 (as in qemu-img)');
    }
    if (o.size === undefined && o.backing === undefined) fail('size', 'required (or a backing file to take it from)');
  });

/** Options of {@link createImage} as a caller writes them (sizes as numbers or strings such as '10G'). */
export type CreateOptionsInput = z.input<typeof createOptionsSchema>;

/** Validates options (throws BlockError EINVAL naming the field). */
export function parseCreateOptions(input: unknown): z.output<typeof createOptionsSchema> {
  return parseOptions(createOptionsSchema, input);
}

/** Rounds a size up to whole sectors, as qemu-img create does for qcow2 and raw. */
export function roundToSectors(size: number): number {
  return Math.ceil(size / L.SECTOR_SIZE) * L.SECTOR_SIZE;
}

/** The qcow2 settings of validated options; `size` is the final virtual size (backing size applied). */
export function qcow2Settings(o: z.output<typeof createOptionsSchema>, size: number): Qcow2CreateSettings {
  const version = o.compat === '0.10' || o.compat === 'v2' ? 2 : 3;
  // data-file-raw promises a data file readable as raw: QEMU then preallocates the metadata.
  const preallocation = o.dataFileRaw && o.preallocation === 'off' ? 'metadata' : o.preallocation;
  return {
    size: roundToSectors(size),
    version,
    clusterBits: Math.log2(o.clusterSize ?? 65536),
    refcountOrder: Math.log2(o.refcountBits ?? 16),
    extendedL2: o.extendedL2 ?? false,
    compressionType: o.compressionType ?? 'zlib',
    lazyRefcounts: o.lazyRefcounts ?? false,
    ...(o.dataFile === undefined ? {} : { dataFile: o.dataFile }),
    dataFileRaw: o.dataFileRaw ?? false,
    ...(o.backing === undefined ? {} : { backing: o.backing }),
    ...(o.backingFormat === undefined ? {} : { backingFormat: o.backingFormat }),
    preallocation,
  };
}

/**
 * Options of {@link createImage} for a format whose driver creates images itself (any format
 * but qcow2 and raw: vdi, …). The format's own options sit in `formatOptions` under qemu-img's
 * `-o` names and are checked by the driver's `create.schema`.
 */
export const formatCreateOptionsSchema = z
  .object({
    /** The format driver's name (`vdi`, …). */
    format: z.string().min(1, 'must not be empty'),
    /** Virtual size (bytes or '10G'); the format may round it. Default: the backing file's size. */
    size: sizeSchema().optional(),
    /** Backing file name as stored in the image (formats with backing files only). */
    backing: z.string().min(1, 'must not be empty').max(L.MAX_BACKING_NAME, `must be at most ${L.MAX_BACKING_NAME} bytes`).optional(),
    /** Format of the backing file; probed when omitted. */
    backingFormat: z.string().min(1, 'must not be empty').optional(),
    /** The format's creation options by qemu-img's `-o` names (`static`, `subformat`, …). */
    formatOptions: z.record(z.string(), z.unknown()).default({}),
  })
  .strict()
  .superRefine((o, ctx) => {
    if (o.backingFormat !== undefined && o.backing === undefined) ctx.addIssue({ code: 'custom', path: ['backingFormat'], message: 'needs a backing file' });
    if (o.size === undefined && o.backing === undefined) ctx.addIssue({ code: 'custom', path: ['size'], message: 'required (or a backing file to take it from)' });
  });

/** {@link formatCreateOptionsSchema}'s options as a caller writes them. */
export type FormatCreateOptionsInput = z.input<typeof formatCreateOptionsSchema>;

/** A `-o` word as a boolean (`on`, `off`, …) or a number (`4096`); anything else as it is. */
function coerceWord(v: unknown): unknown {
  if (v === 'on' || v === 'true' || v === 'yes') return true;
  if (v === 'off' || v === 'false' || v === 'no') return false;
  if (typeof v === 'string' && /^\d+$/.test(v) && Number.isSafeInteger(Number(v))) return Number(v);
  return v;
}

/**
 * A format's creation options checked by its driver's schema (unknown keys are an EINVAL naming
 * them). Values as `-o` spells them (`on`, `4096`) are taken as they are where the schema takes
 * them; a key the schema refuses as given gets qemu-img's word converted (a boolean, a number).
 */
export function parseFormatOptions(schema: z.ZodType<Record<string, unknown>>, raw: Record<string, unknown>): Record<string, unknown> {
  const attempt: Record<string, unknown> = { ...raw };
  for (;;) {
    const r = schema.safeParse(attempt);
    if (r.success) return r.data;
    let changed = false;
    for (const issue of r.error.issues) {
      const k = issue.path[0];
      if (typeof k !== 'string' || !Object.hasOwn(raw, k) || attempt[k] !== raw[k]) continue;
      const converted = coerceWord(raw[k]);
      if (converted !== raw[k]) {
        attempt[k] = converted;
        changed = true;
      }
    }
    // Each key is converted at most once: the loop ends.
    if (!changed) throw zodToBlockError(r.error);
  }
}
