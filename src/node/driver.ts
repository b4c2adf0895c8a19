// The driver contract (what a driver implements and gets), over the node class of this layer.
import type { z } from 'zod';
import type { BlockNode } from './node.js';
import type { GenericBlockDriver, GenericOpenContext } from './types.js';

export type { BackingSource, BlockStatus, CreateBacking, CreateSiblings, DriverCapabilities, DriverInstance, DriverKind, FormatCreator, GenericBlockDriver, GenericOpenContext, InternalSnapshotInfo, InternalSnapshots, NewSnapshot, NodeOptions, ParentLink, StoredBitmap } from './types.js';

/** What a driver gets to open one node. */
export type OpenContext<O> = GenericOpenContext<BlockNode, O>;

/** A driver: a name, its capabilities, its options schema, the roles of its children, `open` and, for a format, `probe`. */
export type BlockDriver<S extends z.ZodType = z.ZodType> = GenericBlockDriver<BlockNode, S>;

export { SETTLED } from './settled.js';

/** Helper for driver authors: keeps the schema's type flowing into `open`. */
export function defineDriver<S extends z.ZodType>(driver: BlockDriver<S>): BlockDriver<S> {
  return driver;
}
