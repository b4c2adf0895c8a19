import { BlockError } from '../../errors.js';
import { type CheckOptions, type CheckResult, emptyResult } from '../../node/check-result.js';
import type { NodeOptions } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { FlatExtent } from './flat-extent.js';
import * as L from './limits.js';
import { openDisk } from './open-extents.js';
import { readSparseMetadata } from './open-sparse.js';
import { readClamped } from './sparse-extent.js';

/** Why a check stops: the first grain QEMU finds past its extent file's end. */
function pastEof(sector: number, log: (line: string) => void): BlockError {
  log(`ERROR: cluster offset for sector ${sector} points after EOF`);
  return new BlockError('ECORRUPT', `Check failed: cluster offset for sector ${sector} points after EOF`, { offset: sector * L.SECTOR, field: 'grain table entry' });
}

/**
 * `qemu-img check -f vmdk` (QEMU vmdk_co_check): the image opens (its extents and their
 * metadata checked as an open checks them), then one probe per grain, in guest order, asks
 * where the grain is; the first allocated one at or past the end of its extent file (a flat
 * extent's start too) ends the check with an error, as qemu-img's "Check failed". A clean image
 * gives a result with no counts, as QEMU fills none; nothing is repaired (ENOTSUP, as QEMU).
 */
export async function vmdkCheck(file: BlockNode, options: CheckOptions<BlockNode>): Promise<CheckResult> {
  // QEMU's check answers a repair with ENOTSUP, which qemu-img reports as a format without checks.
  if (options.repair) throw new BlockError('ENOTSUP', 'This image format does not support checks (vmdk: no repairs)', { field: 'format' });
  const log = options.log ?? (() => {});
  const opened: BlockNode[] = [];
  const openChild = async (_role: string, o: NodeOptions) => {
    if (!options.openNode) throw new BlockError('ENOTSUP', 'vmdk: this check cannot open the extent files the descriptor names', { field: 'file' });
    const n = await options.openNode(o);
    opened.push(n);
    return n;
  };
  try {
    const disk = await openDisk({ openChild, readOnly: true, nodeName: file.name }, file, async (_o, t) => void t.fill(0));
    // QEMU's probe: a sector that steps by the grain size of the extent it falls in (a flat extent is one grain).
    let probe = 0;
    for (const { extent } of disk.extents) {
      const start = extent.start / L.SECTOR;
      const end = start + extent.length / L.SECTOR;
      if (probe >= end) continue;
      const fileLength = extent.file.length;
      if (extent instanceof FlatExtent) {
        if (extent.fileOffset >= fileLength) throw pastEof(probe, log);
        probe += end - start;
        continue;
      }
      const m = await readSparseMetadata(extent.file);
      const gs = m.header.grainSectors;
      const first = Math.floor((probe - start) / gs);
      const count = Math.ceil((end - probe) / gs);
      const firstProbe = probe;
      probe += count * gs;
      const { gtEntries, gtBytes, zeroGrain } = m.layout;
      const table = new Uint8Array(gtBytes);
      const view = new DataView(table.buffer);
      for (let gt = Math.floor(first / gtEntries); gt <= Math.floor((first + count - 1) / gtEntries); gt++) {
        if (m.gd[gt] === 0) continue;
        await readClamped(extent.file, m.gd[gt] * L.SECTOR, table);
        const from = Math.max(first, gt * gtEntries);
        const to = Math.min(first + count, (gt + 1) * gtEntries);
        for (let g = from; g < to; g++) {
          const e = view.getUint32((g - gt * gtEntries) * 4, true);
          if (e === 0 || (zeroGrain && e === L.GTE_ZEROED)) continue;
          if (e * L.SECTOR >= fileLength) throw pastEof(firstProbe + (g - first) * gs, log);
        }
      }
    }
    return emptyResult(options.filename ?? file.name, 'vmdk');
  } finally {
    for (const n of opened) await n.unref();
  }
}
