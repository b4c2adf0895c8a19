import type { BlockNode } from '../../node/node.js';
import type { Qcow2Header } from './header.js';
import type { L2Cache } from './l2-cache.js';
import type { MetadataOverlap } from './overlap.js';
import type { Refcounts } from './refcounts.js';

/** What the writer needs from the driver. */
export interface WriterContext {
  readonly h: Qcow2Header;
  /** The image file. */
  readonly file: BlockNode;
  /** The L1 table (shared with the read path, changed in place); a resize replaces both (resize.ts). */
  l1: Buffer;
  l1Offset: number;
  readonly cache: L2Cache;
  readonly refcounts: Refcounts;
  /** Guest reads through the current mapping (the COW source). */
  readonly readGuest: (offset: number, target: Uint8Array) => Promise<void>;
  readonly hasBacking: boolean;
  /** Where guest data lives: the image file, or the external data file. */
  readonly data: BlockNode;
  /** Guest data is in an external data file: host offset = guest offset, no refcounts for data. */
  readonly externalData: boolean;
  /** The external data file must stay a valid raw image (data_file_raw). */
  readonly dataRaw: boolean;
  /** The metadata overlap check: data and metadata writes never land on other metadata. */
  readonly overlap: MetadataOverlap;
  /** Called once before the first change to the image (sets the dirty bit with lazy refcounts). */
  readonly beforeFirstWrite?: () => Promise<void>;
}
