// What the main thread and an iothread say to each other (structured-clone values only).
import type { HandedConnection } from '../nbd/handover.js';
import type { SerializedError } from '../worker/protocol.js';

/** An export opened in an iothread: its node graph as qemu-storage-daemon options, and the export's own options. */
export interface IothreadExportSpec {
  /** `-object throttle-group,…` texts of the groups the graph uses (each lives in this iothread alone). */
  groups: string[];
  /** QAPI BlockdevOptions of the export's node and every node below it, in the order given. */
  blockdevs: { args: Record<string, unknown>; keyval: boolean }[];
  /** The export's id (its drive's id in the iothread), NBD name and node. */
  id: string;
  name: string;
  nodeName: string;
  writable: boolean;
  description?: string;
  allocationDepth?: boolean;
}

/** What the main thread needs to negotiate for an export it hands over: its size and whether writes are refused. */
export interface ServedShape {
  length: number;
  readOnly: boolean;
}

export type IothreadCall =
  | { seq: number; op: 'export'; spec: IothreadExportSpec }
  | { seq: number; op: 'remove'; name: string }
  | { seq: number; op: 'set-limits'; id: string; limits: Record<string, unknown> }
  | { seq: number; op: 'close' }
  | { seq: 0; op: 'adopt'; connection: HandedConnection };

export type IothreadMessage =
  | { seq: number; value?: unknown; error?: SerializedError }
  | { seq: 0; event: 'connect' | 'disconnect' | 'error'; client?: { address: string; port?: number; export: string | null }; reason?: string; message?: string };

/** workerData of an iothread's worker. */
export interface IothreadData {
  id: string;
  maxConnections?: number;
  memoryBudget?: number;
}
