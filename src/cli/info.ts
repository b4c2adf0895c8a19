import { parseArgs } from 'node:util';
import { describeImages, type ImageInfo } from '../tools/info.js';
import { INFO_HELP } from './help.js';
import { printLine } from './print.js';
import { checkFormat, checkOutput, forceShareOption, formatOption, humanSize, outputOptions, usageLine } from './target.js';

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
function text(d: ImageInfo, features?: unknown): string {
  const size = d['virtual-size'];
  const lines = [`image: ${d.filename ?? '(none)'}`, `file format: ${d.format}`, `virtual size: ${humanSize(size)} (${size} bytes)`];
  if (d['actual-size'] !== undefined) lines.push(`disk size: ${humanSize(d['actual-size'])}`);
  if (d['cluster-size']) lines.push(`cluster_size: ${d['cluster-size']}`);
  if (d['dirty-flag']) lines.push('cleanly shut down: no');
  const backing = d['backing-filename'];
  if (backing) {
    const full = d['full-backing-filename'];
    lines.push(`backing file: ${backing}${full !== undefined && full !== backing ? ` (actual path: ${full})` : ''}`);
  }
  if (d['backing-filename-format']) lines.push(`backing file format: ${d['backing-filename-format']}`);
  const snaps = d.snapshots ?? [];
  if (snaps.length > 0) {
    lines.push('Snapshot list:', 'ID        TAG               VM SIZE                DATE     VM CLOCK');
    for (const s of snaps) {
      const date = new Date(s['date-sec'] * 1000).toISOString().replace('T', ' ').slice(0, 19);
      const clock = new Date(s['vm-clock-sec'] * 1000 + s['vm-clock-nsec'] / 1e6).toISOString().slice(11, 23);
      lines.push(`${String(s.id).padEnd(10)}${String(s.name).padEnd(18)}${humanSize(s['vm-state-size']).padStart(7)} ${date} ${clock}`);
    }
  }
  const fs = d['format-specific']?.data;
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
  const backingChain = values['backing-chain'] ?? false;
  const chain = await describeImages(positionals[0], { format, snapshot: values.snapshot, forceShare: values['force-share'], backingChain });
  if (output === 'json') printLine(JSON.stringify(backingChain ? chain.map((d) => d.info) : chain[0].info, null, 4));
  else printLine(chain.map((d) => text(d.info, d.features)).join('\n\n'));
  return 0;
}
