import { BlockError } from '../../errors.js';
import { type CheckOptions, type CheckResult, emptyResult } from '../../node/check-result.js';
import type { BlockNode } from '../../node/node.js';
import { BlockMap, isAllocated } from './block-map.js';
import { blockMapBytes, parseVdiHeader } from './header.js';
import * as L from './limits.js';

/**
 * `qemu-img check -f vdi` (QEMU vdi_co_check): every map entry points below blocks_in_image, at
 * a data block no other entry uses, and the header counts the entries that point at data. Each
 * finding is a corruption; nothing is repaired (QEMU cannot either).
 */
export async function vdiCheck(file: BlockNode, options: CheckOptions): Promise<CheckResult> {
  const result = emptyResult(options.filename ?? file.name, 'vdi');
  if (options.repair) throw new BlockError('ENOTSUP', 'vdi: check cannot repair images', { field: 'repair' });
  const log = options.log ?? (() => {});
  const head = new Uint8Array(Math.min(L.HEADER_BYTES, file.length));
  await file.read(0, head);
  const h = parseVdiHeader(head, file.length);
  const map = new BlockMap(new Uint8Array(blockMapBytes(h.blocksInImage)), h.blocksInImage);
  if (map.bytes.length > 0) await file.read(h.offsetBmap, map.bytes);
  // used[index]: a guest block seen so far points at data block index
  const used = new Uint8Array(h.blocksInImage);
  let allocated = 0;
  for (let b = 0; b < h.blocksInImage; b++) {
    const e = map.get(b);
    if (!isAllocated(e)) continue;
    if (e >= h.blocksInImage) {
      log(`ERROR: block index ${b} too large, is ${e}`);
      result.corruptions++;
      continue;
    }
    allocated++;
    if (used[e]) {
      // QEMU's wording, which names the shared data block twice
      log(`ERROR: block index ${e} also used by ${e}`);
      result.corruptions++;
    } else used[e] = 1;
  }
  if (allocated !== h.blocksAllocated) {
    log(`ERROR: allocated blocks mismatch, is ${allocated}, should be ${h.blocksAllocated}`);
    result.corruptions++;
  }
  result.totalClusters = h.blocksInImage;
  result.allocatedClusters = allocated;
  return result;
}
