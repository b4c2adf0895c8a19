// Resolving an export's bitmaps as QEMU's nbd_export_create does: each name is searched on the
// exported node, then down through filters and the backing chain; QEMU's refusals; the bitmaps
// held busy while the export lives.
import type { BlockNode } from '../node/node.js';
import { BlockError } from '../errors.js';
import { DirtyBitmap } from '../node/dirty-bitmap.js';
import type { NbdExport } from './export.js';
import { type ExportContexts, NO_CONTEXTS } from './meta-contexts.js';

/** The server's copy of an export, with the contexts it offers. */
export interface ServedExport extends NbdExport {
  readonly contexts: ExportContexts;
}

/** The contexts an export offers (none for an export the server did not resolve). */
export function contextsOf(e: NbdExport): ExportContexts {
  return (e as Partial<ServedExport>).contexts ?? NO_CONTEXTS;
}

/** The node below `node` whose data it shows: a filter's file child, else the backing child (QEMU bdrv_filter_or_cow_bs). */
function filteredOrBacking(node: BlockNode): BlockNode | undefined {
  if (node.driver.capabilities.kind === 'filter') return node.child('file');
  return node.child('backing');
}

/** Finds a bitmap by name on `top` or below it; the node it was found on too. */
function findBitmap(top: BlockNode, name: string): { bitmap: DirtyBitmap; node: BlockNode } | undefined {
  for (let node: BlockNode | undefined = top; node !== undefined; node = filteredOrBacking(node)) {
    const bitmap = node.bitmaps.find(name);
    if (bitmap !== undefined) return { bitmap, node };
  }
  return undefined;
}

/**
 * The contexts of an export: its bitmaps found and checked, qemu:allocation-depth if asked.
 * Throws QEMU's errors (a missing bitmap; an enabled one on a read-only export of a writable
 * node; a busy or inconsistent one) before anything is marked busy.
 */
export function resolveContexts(e: NbdExport, readOnly: boolean): ExportContexts {
  const wanted = e.bitmaps ?? [];
  if (!Array.isArray(wanted)) throw new BlockError('EINVAL', `export '${e.name}': bitmaps must be a list`, { field: 'bitmaps' });
  const bitmaps: DirtyBitmap[] = [];
  for (const w of wanted) {
    let bitmap: DirtyBitmap;
    if (w instanceof DirtyBitmap) {
      bitmap = w;
    } else if (typeof w === 'string') {
      const found = findBitmap(e.drive.node, w);
      if (found === undefined) throw new BlockError('ENOENT', `Bitmap '${w}' is not found`, { field: 'bitmaps' });
      // The export could never show the writes that keep changing it.
      if (readOnly && !found.node.readOnly && found.bitmap.recording) {
        throw new BlockError('EINVAL', `Enabled bitmap '${w}' incompatible with readonly export`, { field: 'bitmaps' });
      }
      bitmap = found.bitmap;
    } else {
      throw new BlockError('EINVAL', `export '${e.name}': a bitmap must be a name or a DirtyBitmap`, { field: 'bitmaps' });
    }
    // QEMU BDRV_BITMAP_ALLOW_RO: busy first, then inconsistent.
    bitmap.check('record');
    bitmap.check('read');
    bitmaps.push(bitmap);
  }
  const allocationDepth = e.allocationDepth === true;
  if (bitmaps.length === 0 && !allocationDepth) return NO_CONTEXTS;
  return { bitmaps, allocationDepth };
}

/** Marks the export's bitmaps busy. */
export function acquireContexts(c: ExportContexts): void {
  for (const b of c.bitmaps) b.acquire();
}

/** Gives back what {@link acquireContexts} took. */
export function releaseContexts(c: ExportContexts): void {
  for (const b of c.bitmaps) b.release();
}
