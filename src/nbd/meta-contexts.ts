// The metadata contexts an export offers (base:allocation, qemu:allocation-depth,
// qemu:dirty-bitmap:NAME) and how a client's LIST/SET_META_CONTEXT queries select among them,
// with the matching rules of QEMU's NBD server (nbd/server.c nbd_negotiate_meta_queries).
import * as P from '../drivers/nbd/protocol.js';
import type { DirtyBitmap } from '../node/dirty-bitmap.js';

/**
 * Context ids. QEMU numbers them 0, 1, 2 + i; any numbering is valid (the client learns the
 * ids from SET_META_CONTEXT's replies), and base:allocation has had id 1 here from the start.
 */
export const BASE_ALLOCATION_ID = 1;
export const ALLOCATION_DEPTH_ID = 2;
/** The export's i-th bitmap has id DIRTY_BITMAP_ID + i. */
export const DIRTY_BITMAP_ID = 3;

export const ALLOCATION_DEPTH_CONTEXT = 'qemu:allocation-depth';
export const DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';
/** NBD_STATE_DIRTY: the flag of a dirty extent in a qemu:dirty-bitmap context. */
export const NBD_STATE_DIRTY = 1;

/** What an export offers besides base:allocation. */
export interface ExportContexts {
  /** Bitmaps served as qemu:dirty-bitmap:NAME, in the order the export named them. */
  readonly bitmaps: readonly DirtyBitmap[];
  /** qemu:allocation-depth is served. */
  readonly allocationDepth: boolean;
}

export const NO_CONTEXTS: ExportContexts = { bitmaps: [], allocationDepth: false };

/** One context in a reply: its id (0 in LIST replies, as QEMU) and name. */
export interface ContextReply {
  id: number;
  name: string;
}

/** The contexts a client selected for an export (SET_META_CONTEXT), or a LIST query matched. */
export class MetaSelection {
  allocation = false;
  depth = false;
  /** bitmaps[i]: the export's i-th bitmap is selected. */
  readonly bitmaps: boolean[];
  /** Bitmaps selected, in id order (what block status walks, without a lookup per request). */
  selectedBitmaps: { id: number; bitmap: DirtyBitmap }[] = [];

  constructor(
    readonly exportName: string,
    readonly contexts: ExportContexts,
  ) {
    this.bitmaps = contexts.bitmaps.map(() => false);
  }

  /** Contexts selected: one BLOCK_STATUS chunk each. */
  get count(): number {
    return (this.allocation ? 1 : 0) + (this.depth ? 1 : 0) + this.selectedBitmaps.length;
  }

  /** The selected contexts in QEMU's order (base, depth, bitmaps); ids 0 when listing. */
  replies(list: boolean): ContextReply[] {
    const out: ContextReply[] = [];
    if (this.allocation) out.push({ id: list ? 0 : BASE_ALLOCATION_ID, name: P.NBD_META_BASE_ALLOCATION });
    if (this.depth) out.push({ id: list ? 0 : ALLOCATION_DEPTH_ID, name: ALLOCATION_DEPTH_CONTEXT });
    for (const { id, bitmap } of this.selectedBitmaps) out.push({ id: list ? 0 : id, name: DIRTY_BITMAP_PREFIX + bitmap.name });
    return out;
  }

  private finish(): this {
    this.selectedBitmaps = [];
    this.contexts.bitmaps.forEach((bitmap, i) => {
      if (this.bitmaps[i]) this.selectedBitmaps.push({ id: DIRTY_BITMAP_ID + i, bitmap });
    });
    return this;
  }

  /**
   * Matches the queries of LIST (`list`) or SET against what the export offers. LIST with no
   * query lists everything; in LIST an empty name after a namespace (`base:`, `qemu:`,
   * `qemu:dirty-bitmap:`) lists all of it, in SET it selects nothing. Unknown queries are ignored.
   */
  static match(exportName: string, contexts: ExportContexts, queries: readonly string[], list: boolean): MetaSelection {
    const s = new MetaSelection(exportName, contexts);
    if (list && queries.length === 0) {
      s.allocation = true;
      s.depth = contexts.allocationDepth;
      s.bitmaps.fill(true);
      return s.finish();
    }
    for (const q of queries) s.query(q, list);
    return s.finish();
  }

  private query(q: string, list: boolean): void {
    if (q.startsWith('base:')) {
      const rest = q.slice(5);
      if (rest === 'allocation' || (rest === '' && list)) this.allocation = true;
      return;
    }
    if (!q.startsWith('qemu:')) return;
    const rest = q.slice(5);
    if (rest === '') {
      if (list) {
        this.depth = this.contexts.allocationDepth;
        this.bitmaps.fill(true);
      }
      return;
    }
    if (rest === 'allocation-depth') {
      if (this.contexts.allocationDepth) this.depth = true;
      return;
    }
    if (!q.startsWith(DIRTY_BITMAP_PREFIX)) return;
    const name = q.slice(DIRTY_BITMAP_PREFIX.length);
    if (name === '') {
      if (list) this.bitmaps.fill(true);
      return;
    }
    const i = this.contexts.bitmaps.findIndex((b) => b.name === name);
    if (i >= 0) this.bitmaps[i] = true;
  }
}
