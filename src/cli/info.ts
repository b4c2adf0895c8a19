import { parseArgs } from 'node:util';
import { BlockLayer } from '../layer.js';
import type { BlockNode } from '../node/node.js';
import { checkFormat, formatOption, humanSize, targetOptions, usageLine } from './target.js';

/** One image of a chain, as `info` shows it. */
function describe(node: BlockNode): Record<string, unknown> {
  const format = node.driver.name;
  const info = node.info();
  const file = node.child('file');
  // An http node names its URL (without credentials or query) where a file node names its path.
  const url = (file ?? node).driver.name === 'http' ? ((file ?? node).info().url as string) : undefined;
  const filename = (file?.options.filename as string | undefined) ?? (node.options.filename as string | undefined) ?? url;
  const out: Record<string, unknown> = { filename, format, virtualSize: node.length };
  if (format === 'qcow2') {
    const bitmaps = info.bitmaps as { name: string; granularity: number; flags: number }[];
    Object.assign(out, {
      clusterSize: info.clusterSize,
      backingFilename: info.backingFile,
      fullBackingFilename: fullBackingName(file?.driver.name === 'file' ? filename : undefined, info.backingFile as string | undefined),
      backingFilenameFormat: info.backingFormat,
      snapshots: info.snapshots,
      // in the order qemu-img info prints them
      formatSpecific: {
        compat: info.compat,
        compressionType: info.compressionType,
        lazyRefcounts: info.lazyRefcounts,
        // listed only when the image has some, as qemu-img info lists them
        bitmaps: bitmaps.length > 0 ? bitmaps.map((b) => ({ flags: bitmapFlags(b.flags), name: b.name, granularity: b.granularity })) : undefined,
        refcountBits: info.refcountBits,
        dataFile: info.dataFile,
        dataFileRaw: info.dataFile ? info.dataFileRaw : undefined,
        corrupt: info.corrupt,
        extendedL2: info.extendedL2,
        features: info.features,
      },
      // qemu-img's "dirty-flag": the image was not closed cleanly (lazy refcounts, then a crash).
      dirtyFlag: info.dirty,
    });
  } else {
    if (Object.keys(info).length > 0) out.formatSpecific = info;
    out.dirtyFlag = false;
  }
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

function text(d: Record<string, unknown>): string {
  const lines = [`image: ${d.filename ?? '(none)'}`, `file format: ${d.format}`, `virtual size: ${humanSize(d.virtualSize as number)} (${d.virtualSize} bytes)`];
  if (d.clusterSize) lines.push(`cluster_size: ${d.clusterSize}`);
  if (d.dirtyFlag) lines.push('cleanly shut down: no');
  if (d.backingFilename) {
    const full = d.fullBackingFilename;
    lines.push(`backing file: ${d.backingFilename}${full !== undefined && full !== d.backingFilename ? ` (actual path: ${full})` : ''}`);
  }
  if (d.backingFilenameFormat) lines.push(`backing file format: ${d.backingFilenameFormat}`);
  const snaps = (d.snapshots as { id: string; name: string; vmStateSize: number; date: { sec: number }; vmClockNs: number }[] | undefined) ?? [];
  if (snaps.length > 0) {
    lines.push('Snapshot list:', 'ID        TAG               VM SIZE                DATE     VM CLOCK');
    for (const s of snaps) {
      const date = new Date(s.date.sec * 1000).toISOString().replace('T', ' ').slice(0, 19);
      const clock = new Date(s.vmClockNs / 1e6).toISOString().slice(11, 23);
      lines.push(`${s.id.padEnd(10)}${s.name.padEnd(18)}${humanSize(s.vmStateSize).padStart(7)} ${date} ${clock}`);
    }
  }
  const fs = d.formatSpecific as Record<string, unknown> | undefined;
  if (fs) {
    lines.push('Format specific information:');
    for (const [k, v] of Object.entries(fs)) {
      if (v === undefined) continue;
      const key = k.replace(/[A-Z]/g, (c) => ` ${c.toLowerCase()}`);
      if (Array.isArray(v)) lines.push(`    ${key}:`, ...nested(v, '        '));
      else lines.push(`    ${key}: ${typeof v === 'object' ? JSON.stringify(v) : v}`);
    }
  }
  return lines.join('\n');
}

export const INFO_HELP = `usage: blocklayer info [-f FMT] [--json] [--snapshot S] [--backing-chain] IMAGE
Format, virtual size, cluster size, backing file, snapshots and format-specific data of an image, like qemu-img info.

  -f, --format FMT     image format (raw, qcow2); given, it is used without probing
  --json               the information as JSON
  --snapshot S         describe snapshot S (id or name) of a qcow2 image
  --backing-chain      describe every image of the backing chain
  -h, --help           this help`;

/** `blocklayer info [-f FMT] IMAGE [--json] [--snapshot S] [--backing-chain]`: like qemu-img info (`-f`: no probing). */
export async function infoCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { json: { type: 'boolean' }, snapshot: { type: 'string' }, ...formatOption, 'backing-chain': { type: 'boolean' } },
  });
  if (positionals.length !== 1) throw new Error(usageLine(INFO_HELP));
  const format = checkFormat(values.format);
  const layer = new BlockLayer();
  const drive = await layer.openDrive(await targetOptions(positionals[0], { format, snapshot: values.snapshot }));
  try {
    const chain: Record<string, unknown>[] = [];
    for (let node: BlockNode | undefined = drive.node; node; node = values['backing-chain'] ? node.child('backing') : undefined) chain.push(describe(node));
    if (values.json) console.log(JSON.stringify(values['backing-chain'] ? chain : chain[0], null, 2));
    else console.log(chain.map(text).join('\n\n'));
  } finally {
    await layer.close();
  }
  return 0;
}
