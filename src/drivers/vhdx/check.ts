import type { BlockError } from '../../errors.js';
import { type CheckOptions, type CheckResult, emptyResult } from '../../node/check-result.js';
import type { BlockNode } from '../../node/node.js';
import { openVhdx } from './open.js';

/**
 * `qemu-img check -f vhdx` (QEMU vhdx_co_check): the image opens as for I/O (with a repair, a log
 * that needs replaying is replayed and counted as a fixed corruption; without, such an image is
 * refused as QEMU's read-only open refuses it), then every BAT entry is checked and each problem
 * counted as a corruption. Nothing else is repaired: QEMU repairs nothing else either.
 */
export async function checkVhdx(file: BlockNode, options: CheckOptions): Promise<CheckResult> {
  const result = emptyResult(options.filename ?? file.name, 'vhdx');
  const opened = await openVhdx(file, options.repair !== undefined, file.name, false);
  if (opened.logReplayed) {
    result.corruptionsFixed++;
    options.log?.('Repairing: the log was replayed');
  }
  const found = (e: BlockError) => {
    result.corruptions++;
    options.log?.(`ERROR ${e.message.replace(/^vhdx: /, '')}`);
  };
  opened.bat.validate(file.length, opened.meta.virtualSize, opened.taken, opened.regions.bat.start, file.name, opened.meta.hasParent, found);
  return result;
}
