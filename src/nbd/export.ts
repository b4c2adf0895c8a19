import type { Drive } from '../drive.js';
import * as P from '../drivers/nbd/protocol.js';
import type { DirtyBitmap } from '../node/dirty-bitmap.js';
import type { HandOver } from './handover.js';

/** One export: a name clients ask for and the drive that serves it. */
export interface NbdExport {
  /** Name clients select (NBD_OPT_GO / EXPORT_NAME); the empty string is the default export. */
  name: string;
  /** The drive served; its limits and throttling apply to every client. The server never closes it. */
  drive: Drive;
  /** Refuse writes with EPERM and advertise READ_ONLY (always true for a read-only drive). */
  readOnly?: boolean;
  /** Text shown by NBD_OPT_LIST and NBD_INFO_DESCRIPTION. */
  description?: string;
  /**
   * Dirty bitmaps served as the `qemu:dirty-bitmap:NAME` meta context (qemu-nbd -B): a name,
   * looked up on the drive's node and below it (filters, backing chain), or a bitmap object.
   * Each is busy while exported.
   */
  bitmaps?: readonly (string | DirtyBitmap)[];
  /** Serve the `qemu:allocation-depth` meta context (qemu-nbd -A). */
  allocationDepth?: boolean;
  /** Another thread serves the export: after the handshake each connection is handed to it (src/nbd/handover.ts). */
  handover?: HandOver;
}

/** Writes are refused: asked for, or the drive cannot write. */
export function isReadOnly(e: NbdExport): boolean {
  return e.readOnly === true || e.drive.readOnly;
}

/** The transmission flags advertised for an export. */
export function transmissionFlags(e: NbdExport, maxConnections: number): number {
  let f = P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_FLUSH | P.NBD_FLAG_SEND_FUA | P.NBD_FLAG_SEND_CACHE;
  // With one connection allowed, a second one would wait (as qemu-nbd -e 1, which does not advertise it either).
  if (maxConnections > 1) f |= P.NBD_FLAG_CAN_MULTI_CONN;
  if (isReadOnly(e)) f |= P.NBD_FLAG_READ_ONLY;
  else f |= P.NBD_FLAG_SEND_TRIM | P.NBD_FLAG_SEND_WRITE_ZEROES | P.NBD_FLAG_SEND_FAST_ZERO;
  return f;
}
