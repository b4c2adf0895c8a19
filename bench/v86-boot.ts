/**
 * v86 boot time (`npx tsx bench/v86-boot.ts [rounds]`, or `npm run bench -- --full`): SeaBIOS boots the test boot sector
 * (tests/fixtures/v86/boot.asm: 32 single-sector INT 13h reads, one write) from the same raw file
 * through `toV86Disk(drive)` and through v86's own `{ url, async: true, size }` disk, alternately.
 * In Node, v86's async disk reads the path with fs (open, read, close per request) — no HTTP needed;
 * its writes stay in memory. A `{ buffer }` disk (the whole image in memory) is shown for reference.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { toV86Disk } from '../src/adapters/v86.js';
import { BlockLayer } from '../src/index.js';
import { assembleBootSector, type BootResult, bootV86, buildDisk, expectedSumLine } from '../tests/helpers/v86-boot.js';
import { median, row } from './util.js';

let dir = '';
let image = '';
let disk: Uint8Array = new Uint8Array(0);
const pristine = () => fs.writeFileSync(image, disk);

function check(r: BootResult, who: string): BootResult {
  if (!r.serial.includes(expectedSumLine())) throw new Error(`${who}: the guest read wrong data: ${JSON.stringify(r.serial)}`);
  return r;
}

async function ours(): Promise<BootResult> {
  pristine();
  const layer = new BlockLayer();
  const drive = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: image } });
  try {
    return check(await bootV86(toV86Disk(drive)), 'toV86Disk');
  } finally {
    await layer.close();
  }
}

async function v86Async(): Promise<BootResult> {
  pristine();
  return check(await bootV86({ url: image, async: true, size: disk.length }), 'v86 async');
}

async function v86Buffer(): Promise<BootResult> {
  return check(await bootV86({ buffer: disk.slice().buffer }), 'v86 buffer');
}

/** Boot times, ours vs v86's own disks; `ratio` is a time ratio (lower is better). */
export async function v86BootBench(rounds = 7): Promise<Record<string, unknown>> {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-v86-bench-'));
  image = path.join(dir, 'boot.raw');
  disk = buildDisk(await assembleBootSector(dir));
  try {
    // The first boot in a process compiles v86's wasm: not part of any side.
    await v86Buffer();
    const runs: Record<'ours' | 'async' | 'buffer', BootResult[]> = { ours: [], async: [], buffer: [] };
    for (let i = 0; i < rounds; i++) {
      // Rotate the order so no side always runs first.
      const order = [
        ['ours', ours],
        ['async', v86Async],
        ['buffer', v86Buffer],
      ] as const;
      for (let k = 0; k < order.length; k++) {
        const [name, fn] = order[(i + k) % order.length];
        runs[name].push(await fn());
      }
    }
    const ms = (name: keyof typeof runs) => median(runs[name].map((r) => r.ms));
    const instr = (name: keyof typeof runs) => median(runs[name].map((r) => r.instructions));
    console.log(`v86 boot of the boot-sector test, median of ${rounds} rounds (wall time to "DONE"; guest instructions)`);
    row('toV86Disk(raw file drive) vs v86 { url, async }', `${ms('ours').toFixed(0)} ms`, `${ms('async').toFixed(0)} ms`, ms('ours') / ms('async'));
    row('  guest instructions', `${(instr('ours') / 1e6).toFixed(2)} M`, `${(instr('async') / 1e6).toFixed(2)} M`, instr('ours') / instr('async'));
    row('toV86Disk(raw file drive) vs v86 { buffer }', `${ms('ours').toFixed(0)} ms`, `${ms('buffer').toFixed(0)} ms`, ms('ours') / ms('buffer'));
    row('  guest instructions', `${(instr('ours') / 1e6).toFixed(2)} M`, `${(instr('buffer') / 1e6).toFixed(2)} M`, instr('ours') / instr('buffer'));
    return {
      vsAsync: { subject: ms('ours'), baseline: ms('async'), ratio: ms('ours') / ms('async'), unit: 'ms (lower is better)' },
      vsBuffer: { subject: ms('ours'), baseline: ms('buffer'), ratio: ms('ours') / ms('buffer'), unit: 'ms (lower is better)' },
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await v86BootBench(Number(process.argv[2] ?? 7));
