import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { Drive } from '../../src/index.js';
import { haveProgram } from './tools.js';

/** Whether qemu-img and qemu-io are installed. */
export function haveQemuTools(): boolean {
  return haveProgram('qemu-img') && haveProgram('qemu-io');
}

/** Directory qemu tools run in (relative names in options resolve there, as they do for QEMU). */
let cwd: string | undefined;
export function setQemuCwd(dir: string): void {
  cwd = dir;
}

export function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8', cwd });
}

/** Runs qemu-io commands on an image (each `-c`). */
export function qemuIo(image: string, commands: string[], format = 'qcow2'): void {
  execFileSync('qemu-io', ['-f', format, ...commands.flatMap((c) => ['-c', c]), image], { stdio: 'ignore', cwd });
}

/** sha256 of a drive's whole content, read in 1 MiB pieces. */
export async function driveHash(d: Drive): Promise<string> {
  const h = createHash('sha256');
  const step = 1 << 20;
  for (let o = 0; o < d.length; o += step) h.update(await d.read(o, Math.min(step, d.length - o)));
  return h.digest('hex');
}

/** sha256 of what `qemu-img convert -O raw` makes of an image (optionally a snapshot). */
export function referenceHash(image: string, out: string, snapshot?: string): string {
  const args = ['convert', '-O', 'raw'];
  if (snapshot) args.push('-l', `snapshot.name=${snapshot}`);
  execFileSync('qemu-img', [...args, image, out], { cwd });
  const h = createHash('sha256').update(fs.readFileSync(out)).digest('hex');
  fs.rmSync(out);
  return h;
}

interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/** Our block status map in `qemu-img map --output=json` terms (offset only where data is). */
export async function ourMap(d: Drive): Promise<MapEntry[]> {
  return (await d.blockStatusMap()).map((e) => ({
    start: e.offset,
    length: e.length,
    depth: e.depth,
    present: e.allocated,
    zero: e.zero,
    data: e.data,
    ...(e.data && e.hostOffset !== undefined ? { offset: e.hostOffset } : {}),
  }));
}

/** `qemu-img map --output=json`, with offsets only where data is (QEMU also prints them for holes of raw files). */
export function referenceMap(image: string): MapEntry[] {
  const entries = JSON.parse(qemuImg('map', '--output=json', image)) as (MapEntry & { compressed?: boolean })[];
  return entries.map(({ compressed: _c, ...e }) => {
    if (!e.data) delete e.offset;
    return e;
  });
}
