import fs from 'node:fs';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import type { BenchJobInput } from '../bench/job.js';
import { plotSvg } from '../bench/plot.js';
import type { BenchResult } from '../bench/report.js';
import { runJob } from '../bench/runner.js';
import { formatTable } from '../bench/table.js';
import { defaultAio, selectEngine } from '../drivers/file/engine.js';
import { BlockError } from '../errors.js';
import { parseDriveString, withAio } from '../options/drive-string.js';
import type { ThrottleLimits } from '../throttle/limits.js';
import { type CompareTarget, compare } from './bench-compare.js';
import { LIMIT_FLAGS, num, parseLimitFlags, sizeFlag } from './limit-flags.js';
import { targetOptions } from './target.js';


const OPTIONS = {
  rw: { type: 'string' },
  bs: { type: 'string' },
  iodepth: { type: 'string' },
  runtime: { type: 'string' },
  size: { type: 'string' },
  drives: { type: 'string' },
  group: { type: 'string' },
  rwmixread: { type: 'string' },
  clock: { type: 'string' },
  seed: { type: 'string' },
  'slice-ms': { type: 'string' },
  filename: { type: 'string' },
  format: { type: 'string', short: 'f' },
  driver: { type: 'string' },
  'target-size': { type: 'string' },
  'latency-ns': { type: 'string' },
  drive: { type: 'string' },
  json: { type: 'boolean' },
  plot: { type: 'string' },
  compare: { type: 'string' },
  quiet: { type: 'boolean', short: 'q' },
  ...LIMIT_FLAGS,
} as const;

/**
 * `blocklayer bench`: a fio-like job on any target, with limits by their QEMU names; prints a
 * table (or --json), draws --plot FILE.svg, and with --compare fio|qemu-img runs the
 * equivalent job of that tool on the same file in the same run. `--filename json:{…}` gives the
 * whole node tree (QEMU's json: pseudo-protocol), e.g. a blkdebug filter. An I/O error ends the
 * job and the command with that error.
 */
export async function benchCommand(args: string[]): Promise<number> {
  const { values: v, positionals } = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true });
  if (positionals.length > 0) throw new BlockError('EINVAL', `unexpected argument '${positionals[0]}'`);
  const limits: ThrottleLimits = {};
  let group = v.group;
  let target: Record<string, unknown>;
  let filename: string | undefined = v.filename;
  let aio: 'threads' | 'io_uring' | undefined;
  if (v.drive !== undefined) {
    const d = parseDriveString(v.drive);
    if (d.throttle) {
      const { group: g, ...l } = d.throttle;
      Object.assign(limits, l);
      group ??= g;
    }
    filename ??= d.filename;
    if (d.format) v.format ??= d.format;
    aio = d.aio;
  }
  parseLimitFlags(v as Record<string, unknown>, limits);
  if (filename?.startsWith('json:')) {
    // QEMU's json: pseudo-protocol: the whole node tree as JSON (e.g. a blkdebug filter over a file).
    target = jsonTarget(filename);
    filename = undefined;
  } else if (filename !== undefined) {
    target = withAio({ ...(await targetOptions(filename, { format: v.format })) }, aio);
    delete target.readOnly;
    const file = target.file as Record<string, unknown> | undefined;
    if (file) delete file.readOnly;
  } else {
    const driver = v.driver ?? 'null';
    target = { driver, size: sizeFlag('target-size', v['target-size'] ?? '1G') };
    if (v['latency-ns'] !== undefined) target.latencyNs = num('latency-ns', v['latency-ns']);
  }
  if (v.clock === 'virtual') refuseVirtualClock(target);
  const job: BenchJobInput = {
    target,
    limits,
    ...(v.rw !== undefined ? { rw: v.rw as BenchJobInput['rw'] } : {}),
    ...(v.bs !== undefined ? { bs: sizeFlag('bs', v.bs) } : {}),
    ...(v.iodepth !== undefined ? { iodepth: num('iodepth', v.iodepth) } : {}),
    ...(v.runtime !== undefined ? { runtime: num('runtime', v.runtime) } : {}),
    ...(v.size !== undefined ? { size: sizeFlag('size', v.size) } : {}),
    ...(v.drives !== undefined ? { drives: num('drives', v.drives) } : {}),
    ...(group !== undefined ? { group } : {}),
    ...(v.rwmixread !== undefined ? { rwmixread: num('rwmixread', v.rwmixread) } : {}),
    ...(v.clock !== undefined ? { clock: v.clock as 'real' | 'virtual' } : {}),
    ...(v.seed !== undefined ? { seed: num('seed', v.seed) } : {}),
    ...(v['slice-ms'] !== undefined ? { sliceMs: num('slice-ms', v['slice-ms']) } : {}),
  };
  const showBar = !v.quiet && !v.json && process.stderr.isTTY;
  const bar = showBar ? new cliProgress.SingleBar({ format: 'bench [{bar}] {percentage}%', stream: process.stderr }, cliProgress.Presets.shades_classic) : null;
  bar?.start(100, 0);
  let result: BenchResult;
  try {
    result = await runJob(job, (f) => bar?.update(Math.round(f * 100)));
  } finally {
    bar?.stop();
  }
  const compared = v.compare !== undefined ? compare(v.compare, compareTarget(filename, target, aio), result) : undefined;
  if (v.plot) fs.writeFileSync(v.plot, plotSvg(result));
  if (v.json) console.log(JSON.stringify(compared ? { ...result, compare: compared } : result, null, 2));
  else {
    console.log(formatTable(result));
    if (compared) {
      if ('skipped' in compared) console.log(`compare ${v.compare}: skipped: ${compared.skipped}`);
      else {
        console.log(`compare: ${compared.tool} ${compared.iops.toFixed(0)} IOPS; blocklayer/${compared.tool} = ${(result.total.iops / compared.iops).toFixed(3)}`);
        console.log(`  (${compared.tool} ${compared.args.join(' ')})`);
      }
    }
    if (v.plot) console.log(`plot written to ${v.plot}`);
  }
  return 0;
}

/** Drivers whose I/O takes real time (a disk, a network): a virtual clock cannot measure them. */
const REAL_IO = new Set(['file', 'nbd', 'http', 'rbd']);

/**
 * `--clock virtual` only where every node of the target is emulated (null, memory, and filters
 * or formats over them): on a file or a network target its time would not pass on the virtual
 * clock, so the numbers would mean nothing. EINVAL naming --clock and the driver.
 */
function refuseVirtualClock(target: Record<string, unknown>): void {
  const seen = new Set<unknown>();
  const walk = (o: Record<string, unknown>): string | undefined => {
    if (seen.has(o)) return undefined;
    seen.add(o);
    if (typeof o.driver === 'string' && REAL_IO.has(o.driver)) return o.driver;
    for (const c of Object.values(o)) {
      const found = c !== null && typeof c === 'object' && !Array.isArray(c) ? walk(c as Record<string, unknown>) : undefined;
      if (found) return found;
    }
    return undefined;
  };
  const driver = walk(target);
  if (driver !== undefined) {
    throw new BlockError('EINVAL', `--clock virtual: the target does real I/O (a ${driver} node), which a virtual clock cannot time; use --clock real, or --driver null|memory`, { field: 'clock' });
  }
}

/** Node options from a `json:{…}` filename (QEMU's json: pseudo-protocol), in this library's option names. */
function jsonTarget(filename: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(filename.slice('json:'.length));
  } catch (e) {
    throw new BlockError('EINVAL', `--filename: json: target is not valid JSON (${(e as Error).message})`, { field: 'filename' });
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new BlockError('EINVAL', '--filename: json: target must be a JSON object of node options', { field: 'filename' });
  }
  return parsed as Record<string, unknown>;
}

/** The file, format and engine of our job's target, for the equivalent run of the other tool. */
function compareTarget(filename: string | undefined, target: Record<string, unknown>, aio: 'threads' | 'io_uring' | undefined): CompareTarget | undefined {
  if (filename === undefined) return undefined;
  // The engine the file node actually used (io_uring falls back to threads where unavailable).
  return { filename, format: target.driver === 'qcow2' ? 'qcow2' : 'raw', aio: selectEngine(aio ?? defaultAio()).name };
}
