import { stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { qapiSnapshotInfo } from '../drivers/qcow2/snapshots.js';
import { BlockLayer } from '../layer.js';
import type { BlockNode } from '../node/node.js';
import { checkFormat, checkOutput, forceShareOption, formatOption, humanSize, outputOptions, targetOptions, usageLine, withForceShare } from './target.js';

/** Drivers that are protocols: opened as the top node, qemu-img calls their format raw. */
const PROTOCOLS = new Set(['file', 'nbd', 'http', 'rbd']);

interface Snapshot {
  id: string;
  name: string;
  vmStateSize: number;
  date: { sec: number; nsec: number };
  vmClockNs: number;
}

/**
 * One image of a chain in qemu-img info's JSON shape (QAPI ImageInfo: kebab-case keys, in its
 * order): what qemu-img prints that we know. Not given: a snapshot's "icount".
 */
async function describe(node: BlockNode): Promise<Record<string, unknown>> {
  const format = PROTOCOLS.has(node.driver.name) ? 'raw' : node.driver.name;
  const info = node.info();
  const file = node.child('file');
  const proto = file ?? node;
  // An http node names its URL (without credentials or query) where a file node names its path.
  const url = proto.driver.name === 'http' ? (proto.info().url as string) : undefined;
  const filename = (proto.options.filename as string | undefined) ?? url;
  const out: Record<string, unknown> = { filename, format };
  // qemu-img gives the dirty flag where the driver answers bdrv_get_info: qcow2, and raw over a file (not nbd, http, rbd)
  if (format === 'qcow2' || proto.driver.name === 'file') out['dirty-flag'] = format === 'qcow2' ? info.dirty : false;
  // qemu-img's "actual-size": the bytes the image file takes on disk (st_blocks * 512)
  if (proto.driver.name === 'file' && filename !== undefined) out['actual-size'] = (await stat(filename)).blocks * 512;
  out['virtual-size'] = node.length;
  if (format !== 'qcow2') return out;
  const v3 = info.compat === '1.1';
  const bitmaps = info.bitmaps as { name: string; granularity: number; flags: number }[];
  const snapshots = info.snapshots as Snapshot[];
  const backing = info.backingFile as string | undefined;
  Object.assign(out, {
    'cluster-size': info.clusterSize,
    'backing-filename': backing,
    'full-backing-filename': fullBackingName(proto.driver.name === 'file' ? filename : undefined, backing),
    'backing-filename-format': info.backingFormat,
    // listed only when the image has some, as qemu-img lists them
    snapshots: snapshots.length > 0 ? snapshots.map(qapiSnapshotInfo) : undefined,
    'format-specific': {
      type: 'qcow2',
      // in the order qemu-img prints them; a v2 image has no feature bits (no lazy refcounts, corrupt bit, …)
      data: {
        compat: info.compat,
        'compression-type': info.compressionType,
        'lazy-refcounts': v3 ? info.lazyRefcounts : undefined,
        bitmaps: bitmaps.length > 0 ? bitmaps.map((b) => ({ flags: bitmapFlags(b.flags), name: b.name, granularity: b.granularity })) : undefined,
        'refcount-bits': info.refcountBits,
        'data-file': info.dataFile,
        'data-file-raw': info.dataFile ? info.dataFileRaw : undefined,
        corrupt: v3 ? info.corrupt : undefined,
        'extended-l2': v3 ? info.extendedL2 : undefined,
      },
    },
  });
  return out;
}

/**
 * The backing file name as qemu-img info's "full-backing-filename": a relative name joined to the
 * directory of the image's name as given (no normalization), an absolute one as it is; only for a
 * local image file.
 */
function fullBackingName(image: string | undefined, backing: string | undefined): string | undefined {
  if (image === undefined || backing === undefined) return undefined;
  if (backing.startsWith('/') || /^[a-z][a-z0-9+.-]*:/i.test(backing)) return backing;
  return image.slice(0, image.lastIndexOf('/') + 1) + backing;
}

/** A bitmap's flags by the names qemu-img info gives them (bit 0 in-use, bit 1 auto). */
function bitmapFlags(flags: number): string[] {
  const names: string[] = [];
  if (flags & 1) names.push('in-use');
  if (flags & 2) names.push('auto');
  return names;
}

/** A list under "Format specific information", nested as qemu-img prints it ("[0]:", four more spaces a level). */
function nested(value: unknown, indent: string): string[] {
  const lines: string[] = [];
  const entries: [string, unknown][] = Array.isArray(value) ? value.map((v, i) => [`[${i}]`, v]) : Object.entries(value as Record<string, unknown>);
  for (const [k, v] of entries) {
    if (v !== null && typeof v === 'object') lines.push(`${indent}${k}:`, ...nested(v, `${indent}    `));
    else lines.push(`${indent}${k}: ${v}`);
  }
  return lines;
}

/** An image as qemu-img info prints it for people (from its JSON shape); `features`: our extra line, the qcow2 feature bits. */
function text(d: Record<string, unknown>, features?: unknown): string {
  const size = d['virtual-size'] as number;
  const lines = [`image: ${d.filename ?? '(none)'}`, `file format: ${d.format}`, `virtual size: ${humanSize(size)} (${size} bytes)`];
  if (d['actual-size'] !== undefined) lines.push(`disk size: ${humanSize(d['actual-size'] as number)}`);
  if (d['cluster-size']) lines.push(`cluster_size: ${d['cluster-size']}`);
  if (d['dirty-flag']) lines.push('cleanly shut down: no');
  const backing = d['backing-filename'];
  if (backing) {
    const full = d['full-backing-filename'];
    lines.push(`backing file: ${backing}${full !== undefined && full !== backing ? ` (actual path: ${full})` : ''}`);
  }
  if (d['backing-filename-format']) lines.push(`backing file format: ${d['backing-filename-format']}`);
  const snaps = (d.snapshots as Record<string, number | string>[] | undefined) ?? [];
  if (snaps.length > 0) {
    lines.push('Snapshot list:', 'ID        TAG               VM SIZE                DATE     VM CLOCK');
    for (const s of snaps) {
      const date = new Date((s['date-sec'] as number) * 1000).toISOString().replace('T', ' ').slice(0, 19);
      const clock = new Date((s['vm-clock-sec'] as number) * 1000 + (s['vm-clock-nsec'] as number) / 1e6).toISOString().slice(11, 23);
      lines.push(`${String(s.id).padEnd(10)}${String(s.name).padEnd(18)}${humanSize(s['vm-state-size'] as number).padStart(7)} ${date} ${clock}`);
    }
  }
  const fs = (d['format-specific'] as { data: Record<string, unknown> } | undefined)?.data;
  if (fs) {
    lines.push('Format specific information:');
    for (const [k, v] of Object.entries(fs)) {
      if (v === undefined) continue;
      const key = k.replace(/-/g, ' ');
      if (Array.isArray(v)) lines.push(`    ${key}:`, ...nested(v, '        '));
      else lines.push(`    ${key}: ${v}`);
    }
    if (features !== undefined) lines.push(`    features: ${JSON.stringify(features)}`);
  }
  return lines.join('\n');
}

export const INFO_HELP = `usage: blocklayer info [-f FMT] [-U] [--output=human|json] [--snapshot S] [--backing-chain] IMAGE
Format, virtual size, cluster size, backing file, snapshots and format-specific data of an image, like qemu-img info.

  -f, --format FMT     image format (raw, qcow2); given, it is used without probing
  -U, --force-share    read-only, sharing everything: read an image another process holds read-write
  --output FMT         human (the default) or json: qemu-img info --output=json's shape
  --json               the same as --output=json
  --snapshot S         describe snapshot S (id or name) of a qcow2 image
  --backing-chain      describe every image of the backing chain
  -h, --help           this help`;

/** `blocklayer info [-f FMT] [--output=human|json] [--snapshot S] [--backing-chain] IMAGE`: like qemu-img info (`-f`: no probing). */
export async function infoCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ...outputOptions, ...forceShareOption, snapshot: { type: 'string' }, ...formatOption, 'backing-chain': { type: 'boolean' } },
  });
  if (positionals.length !== 1) throw new Error(usageLine(INFO_HELP));
  const output = checkOutput(values, 'human');
  const format = checkFormat(values.format);
  const layer = new BlockLayer();
  const drive = await layer.openDrive(withForceShare(await targetOptions(positionals[0], { format, snapshot: values.snapshot }), values['force-share']));
  try {
    const nodes: BlockNode[] = [];
    for (let node: BlockNode | undefined = drive.node; node; node = values['backing-chain'] ? node.child('backing') : undefined) nodes.push(node);
    const chain = await Promise.all(nodes.map(describe));
    // an nbd or rbd image names no file: qemu-img's filename is the target as written
    if (chain[0].filename === undefined) chain[0].filename = positionals[0];
    if (output === 'json') console.log(JSON.stringify(values['backing-chain'] ? chain : chain[0], null, 4));
    else console.log(chain.map((d, i) => text(d, nodes[i].driver.name === 'qcow2' ? nodes[i].info().features : undefined)).join('\n\n'));
  } finally {
    await layer.close();
  }
  return 0;
}
