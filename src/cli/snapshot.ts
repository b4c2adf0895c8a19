import { parseArgs } from 'node:util';
import { BlockError } from '../errors.js';
import type { InternalSnapshotInfo } from '../node/types.js';
import { type SnapshotAction, snapshotImage } from '../tools/snapshot.js';
import { checkFormat, forceShareOption, formatOption } from './target.js';

const OPTIONS = {
  list: { type: 'boolean', short: 'l' },
  create: { type: 'string', short: 'c' },
  apply: { type: 'string', short: 'a' },
  delete: { type: 'string', short: 'd' },
  quiet: { type: 'boolean', short: 'q' },
  object: { type: 'string', multiple: true },
  ...formatOption,
  ...forceShareOption,
} as const;

const ACTIONS = new Set(['list', 'create', 'apply', 'delete']);

/** QEMU's size_to_str: three significant digits, the unit stepping up from 1000 of the one below ("0 B", "1.5 KiB", "0.977 KiB"). */
export function qemuSizeText(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  // frexp's exponent of n / (1000/1024), then (e - 1) / 10 truncated toward zero.
  const x = n / (1000 / 1024);
  const e = x === 0 ? 0 : Math.floor(Math.log2(x)) + 1;
  const i = Math.min(units.length - 1, Math.trunc((e - 1) / 10));
  return `${Number((n / 2 ** (i * 10)).toPrecision(3))} ${units[i]}`;
}

const two = (n: number) => String(n).padStart(2, '0');

/** One row of qemu-img's snapshot table (QEMU bdrv_snapshot_dump): date in local time, clock as HH:MM:SS.mmm, icount blank when unknown. */
export function snapshotRow(s: InternalSnapshotInfo): string {
  const d = new Date(s.date.sec * 1000);
  const date = `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  const secs = Math.floor(s.vmClockNs / 1e9);
  const clock = `${two(Math.floor(secs / 3600))}:${two(Math.floor(secs / 60) % 60)}:${two(secs % 60)}.${String(Math.floor(s.vmClockNs / 1e6) % 1000).padStart(3, '0')}`;
  const icount = s.icount === -1 ? '' : String(s.icount);
  return `${s.id.padEnd(9)} ${s.name.padEnd(16)} ${qemuSizeText(s.vmStateSize).padStart(8)}${date.padStart(20)}${clock.padStart(13)}${icount.padStart(11)}`;
}

/** qemu-img snapshot -l's table ("Snapshot list:", the header, a row each); nothing for no snapshots. */
export function snapshotTable(list: readonly InternalSnapshotInfo[]): string[] {
  if (list.length === 0) return [];
  const header = `${'ID'.padEnd(10)}${'TAG'.padEnd(17)}${'VM SIZE'.padStart(8)}${'DATE'.padStart(20)}${'VM CLOCK'.padStart(13)}${'ICOUNT'.padStart(11)}`;
  return ['Snapshot list:', header, ...list.map(snapshotRow)];
}

/** `blocklayer snapshot [-l | -c NAME | -a NAME | -d NAME] [-f FMT] [-q] [-U] IMAGE`: qemu-img snapshot's syntax and output. */
export async function snapshotCommand(args: string[]): Promise<number> {
  const { values, positionals, tokens } = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true, tokens: true });
  const given = tokens.filter((t) => t.kind === 'option' && ACTIONS.has(t.name));
  if (given.length > 1) throw new BlockError('EINVAL', "Cannot mix '-l', '-a', '-c', '-d'", { field: 'action' });
  if (values.object !== undefined) throw new BlockError('ENOTSUP', '--object: user-creatable objects (secrets of encrypted images) are not supported', { field: 'object' });
  if (positionals.length !== 1) throw new BlockError('EINVAL', 'Expecting one image file name', { field: 'arguments' });
  const format = checkFormat(values.format);
  let action: SnapshotAction | undefined;
  if (values.list) action = { list: true };
  else if (values.create !== undefined) action = { create: values.create };
  else if (values.apply !== undefined) action = { apply: values.apply };
  else if (values.delete !== undefined) action = { delete: values.delete };
  // Without an action qemu-img opens the image and does nothing.
  const result = await snapshotImage(positionals[0]!, action ?? { list: true }, {
    ...(format === undefined ? {} : { format }),
    ...(values['force-share'] ? { forceShare: true } : {}),
  });
  if (action && 'list' in action) for (const line of snapshotTable(result.snapshots)) console.log(line);
  return 0;
}
