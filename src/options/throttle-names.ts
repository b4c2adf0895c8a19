import { BlockError } from '../errors.js';
import { BUCKET_NAMES, type ThrottleLimits, validateLimits } from '../throttle/limits.js';

/** The 19 limit fields of QAPI ThrottleLimits in camelCase, in QEMU's order (avg, max, length per bucket). */
export const LIMIT_FIELDS: readonly (keyof ThrottleLimits)[] = [
  ...BUCKET_NAMES.flatMap((b) => [b, `${b}Max`, `${b}MaxLength`] as (keyof ThrottleLimits)[]),
  'iopsSize',
];

/** camelCase → QAPI hyphen name: iopsTotalMaxLength → iops-total-max-length. */
export function toQapiName(field: string): string {
  return field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** QAPI hyphen name → camelCase. */
export function fromQapiName(name: string): string {
  return name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

const KIND = { bps: 'bps', iops: 'iops' } as const;
const DIR_SHORT = { Total: '', Read: '_rd', Write: '_wr' } as const;

/** camelCase → QMP block_set_io_throttle / -drive legacy name: bpsReadMax → bps_rd_max, iopsSize → iops_size. */
export function toQmpName(field: string): string {
  if (field === 'iopsSize') return 'iops_size';
  const m = /^(bps|iops)(Total|Read|Write)(Max)?(Length)?$/.exec(field);
  if (!m) throw new Error(`not a limit field: ${field}`);
  return `${KIND[m[1] as keyof typeof KIND]}${DIR_SHORT[m[2] as keyof typeof DIR_SHORT]}${m[3] ? '_max' : ''}${m[4] ? '_length' : ''}`;
}

/** camelCase → libvirt <iotune> element: bpsTotalMax → total_bytes_sec_max, iopsSize → size_iops_sec. */
export function toLibvirtName(field: string): string {
  if (field === 'iopsSize') return 'size_iops_sec';
  const m = /^(bps|iops)(Total|Read|Write)(Max)?(Length)?$/.exec(field);
  if (!m) throw new Error(`not a limit field: ${field}`);
  return `${m[2].toLowerCase()}_${m[1] === 'bps' ? 'bytes' : 'iops'}_sec${m[3] ? '_max' : ''}${m[4] ? '_length' : ''}`;
}

function inverse(fn: (f: string) => string): Map<string, keyof ThrottleLimits> {
  return new Map(LIMIT_FIELDS.map((f) => [fn(f), f]));
}

/** QAPI hyphen name → camelCase field (`iops-total-max` → `iopsTotalMax`). */
export const BY_QAPI = inverse(toQapiName);
/** QMP / -drive name → camelCase field (`bps_rd` → `bpsRead`). */
export const BY_QMP = inverse(toQmpName);
/** libvirt iotune element → camelCase field (`total_iops_sec` → `iopsTotal`). */
export const BY_LIBVIRT = inverse(toLibvirtName);

/**
 * Validates limits with QEMU's rules (validateLimits) but reports the fields as the user spelled
 * them (`bps, bps_rd: …` rather than `bpsTotal, bpsRead: …`).
 */
export function validateSpelled(
  limits: ThrottleLimits,
  spelling: ReadonlyMap<string, string>,
  fallback: (field: string) => string,
  options?: { maxBurstLength?: number },
): void {
  try {
    validateLimits(limits, '', options);
  } catch (e) {
    if (!(e instanceof BlockError)) throw e;
    const colon = e.message.indexOf(': ');
    const fields = e.message.slice(0, colon).split(', ');
    const spelled = fields.map((f) => spelling.get(f) ?? fallback(f));
    throw new BlockError(e.code, `${spelled.join(', ')}: ${e.message.slice(colon + 2)}`, { field: spelled[0], cause: e });
  }
}
