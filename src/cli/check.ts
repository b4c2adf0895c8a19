import { parseArgs } from 'node:util';
import { checkImage } from '../tools/check.js';
import type { CheckResult, RepairMode } from '../node/check-result.js';
import { BlockError, isBlockError } from '../errors.js';
import { checkFormat, checkOutput, forceShareOption, formatOption, outputOptions, targetOptions, usageLine } from './target.js';
import { withForceShare } from '../tools/open-input.js';
import { CHECK_HELP } from './help.js';


const USAGE = usageLine(CHECK_HELP);

/** qemu-img check's exit codes. */
export const CHECK_EXIT = { clean: 0, failed: 1, corruptions: 2, leaks: 3, unsupported: 63 } as const;

/** The result in qemu-img's JSON: hyphenated names, counts of 0 left out as qemu-img leaves them out. */
export function checkJson(r: CheckResult): Record<string, unknown> {
  const out: Record<string, unknown> = { filename: r.filename, format: r.format, 'check-errors': r.checkErrors };
  const optional: [string, number][] = [
    ['image-end-offset', r.imageEndOffset],
    ['total-clusters', r.totalClusters],
    ['allocated-clusters', r.allocatedClusters],
    ['fragmented-clusters', r.fragmentedClusters],
    ['compressed-clusters', r.compressedClusters],
    ['corruptions', r.corruptions],
    ['leaks', r.leaks],
    ['corruptions-fixed', r.corruptionsFixed],
    ['leaks-fixed', r.leaksFixed],
  ];
  for (const [k, v] of optional) if (v !== 0) out[k] = v;
  return out;
}

/**
 * A non-negative number as C's printf("%.2f") prints it: like toFixed(2), except that a value exactly
 * halfway between two hundredths rounds to the even one (3.125 -> "3.12", where toFixed gives "3.13").
 */
export function printf2(x: number): string {
  // toFixed(100) is the exact decimal value of the double here (its expansion ends well within 100 digits)
  const [int, frac] = x.toFixed(100).split('.');
  if (/^\d\d50*$/.test(frac) && Number(frac[1]) % 2 === 0) return `${int}.${frac.slice(0, 2)}`;
  return x.toFixed(2);
}

/** The result as qemu-img check prints it for people. */
export function checkText(r: CheckResult): string {
  const lines: string[] = [];
  if (r.corruptionsFixed || r.leaksFixed) {
    lines.push(
      'The following inconsistencies were found and repaired:',
      '',
      `    ${r.leaksFixed} leaked clusters`,
      `    ${r.corruptionsFixed} corruptions`,
      '',
      'Double checking the fixed image now...',
    );
  }
  if (!r.corruptions && !r.leaks && !r.checkErrors) lines.push('No errors were found on the image.');
  else {
    if (r.corruptions) lines.push('', `${r.corruptions} errors were found on the image.`, 'Data may be corrupted, or further writes to the image may corrupt it.');
    if (r.leaks) lines.push('', `${r.leaks} leaked clusters were found on the image.`, 'This means waste of disk space, but no harm to data.');
    if (r.checkErrors) lines.push('', `${r.checkErrors} internal errors have occurred during the check.`);
  }
  if (r.totalClusters && r.allocatedClusters) {
    const pct = (n: number, of: number) => printf2((n * 100) / of);
    lines.push(
      `${r.allocatedClusters}/${r.totalClusters} = ${pct(r.allocatedClusters, r.totalClusters)}% allocated, ${pct(r.fragmentedClusters, r.allocatedClusters)}% fragmented, ${pct(r.compressedClusters, r.allocatedClusters)}% compressed clusters`,
    );
  }
  if (r.imageEndOffset) lines.push(`Image end offset: ${r.imageEndOffset}`);
  return lines.join('\n');
}

/** Exit code of a finished check, as qemu-img's. */
export function checkExitCode(r: CheckResult): number {
  if (r.checkErrors) return CHECK_EXIT.failed;
  if (r.corruptions) return CHECK_EXIT.corruptions;
  if (r.leaks) return CHECK_EXIT.leaks;
  return CHECK_EXIT.clean;
}

/** `blocklayer check [-f FMT] IMAGE [-r leaks|all] [--output=human|json]`: like qemu-img check, with its exit codes. */
export async function checkCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ...outputOptions, ...forceShareOption, repair: { type: 'string', short: 'r' }, ...formatOption },
  });
  if (positionals.length !== 1) throw new Error(USAGE);
  const repair = values.repair;
  if (repair !== undefined && repair !== 'leaks' && repair !== 'all') throw new Error(`--repair: '${repair}' is not leaks or all\n${USAGE}`);
  const output = checkOutput(values, 'human');
  const format = checkFormat(values.format);
  let result: CheckResult;
  try {
    // -U: through the file driver with QEMU's force-share (a repair writes: refused, as qemu-img does)
    if (values['force-share'] && repair !== undefined) {
      throw new BlockError('EINVAL', '-U/--force-share: force-share=on can only be used with read-only images (not with -r)', { field: 'force-share' });
    }
    const target = values['force-share'] ? withForceShare(await targetOptions(positionals[0], { format }), true) : positionals[0];
    result = await checkImage(target, { format, repair: repair as RepairMode | undefined, log: (line) => console.error(line) });
  } catch (e) {
    if (isBlockError(e) && e.code === 'ENOTSUP' && e.field === 'format') {
      console.error('blocklayer check: This image format does not support checks');
      return CHECK_EXIT.unsupported;
    }
    throw e;
  }
  console.log(output === 'json' ? JSON.stringify(checkJson(result), null, 4) : checkText(result));
  const code = checkExitCode(result);
  if (code === CHECK_EXIT.failed) console.error('blocklayer check: Check failed');
  return code;
}
