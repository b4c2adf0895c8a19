// Typed options of the built-in drivers, derived from their zod schemas (what the schema accepts
// as input), so that a misspelt option of a built-in driver fails to compile. The portable
// drivers are here; the host drivers (file, nbd, rbd) join in host-options.ts, which only the
// Node entry loads, so the browser's types name nothing of Node.
import type { z } from 'zod';
import type { blkdebugDriver } from './blkdebug.js';
import type { httpDriver } from './http/index.js';
import type { memoryDriver } from './memory.js';
import type { nullDriver } from './null.js';
import type { qcow2Driver } from './qcow2/index.js';
import type { rawDriver } from './raw.js';
import type { vmdkDriver } from './vmdk/index.js';
import type { ThrottleFilterSchema } from './throttle.js';
import type { vhdxDriver } from './vhdx/index.js';
import type { vpcDriver } from './vpc/index.js';
import type { vdiDriver } from './vdi/index.js';
import type { NodeOptions } from '../node/driver.js';
import type { BlockNode } from '../node/node.js';

/** The keys every node takes besides its driver's own options. */
export interface CommonNodeOptions {
  /** Name of the node (QEMU node-name); generated if absent. */
  nodeName?: string;
  /** Open read-only. Defaults to the parent's mode (or read-write at the top, read-only for read-only drivers). */
  readOnly?: boolean;
}

/**
 * A child in its role: the options of a built-in driver's node to open, or an open node to share
 * (open a custom driver's node with `openNode` and pass it here, or type the whole tree as {@link NodeOptions}).
 */
export type ChildNodeOptions = BuiltinNodeOptions | BlockNode;

/** The input type of a driver's schema (a schema behind a preprocess step: the schema it feeds). */
type SchemaInput<S> = S extends z.ZodPipe<infer First, infer Inner> ? (First extends z.core.$ZodTransform ? z.input<Inner> : z.input<S>) : z.input<S>;

/** Options of a node of driver `D`: `driver`, the common keys, the options of schema `S`. */
export type DriverNodeOptions<D extends string, S> = {
  /** Name of the driver that opens the node. */
  driver: D;
} & CommonNodeOptions &
  SchemaInput<S>;

/** Options of a `memory` node (a disk in memory). */
export type MemoryNodeOptions = DriverNodeOptions<'memory', (typeof memoryDriver)['schema']>;
/** Options of a `null` node (reads zeros, discards writes; QEMU null-co). */
export type NullNodeOptions = DriverNodeOptions<'null', (typeof nullDriver)['schema']>;
/** Options of an `http` node (a remote file read with byte ranges). */
export type HttpNodeOptions = DriverNodeOptions<'http', (typeof httpDriver)['schema']>;
/** Options of a `raw` node over its `file` child. */
export type RawNodeOptions = DriverNodeOptions<'raw', (typeof rawDriver)['schema']> & {
  /** The node it reads and writes (QEMU's `file` child). */
  file: ChildNodeOptions;
};
/** Options of a `blkdebug` node (error injection) over its `file` child. */
export type BlkdebugNodeOptions = DriverNodeOptions<'blkdebug', (typeof blkdebugDriver)['schema']> & {
  /** The node it reads and writes (QEMU's `file` child). */
  file: ChildNodeOptions;
};
/** Options of a `throttle` filter node over its `file` child. */
export type ThrottleNodeOptions = DriverNodeOptions<'throttle', ThrottleFilterSchema> & {
  /** The node it reads and writes (QEMU's `file` child). */
  file: ChildNodeOptions;
};
/** Options of a `qcow2` node over its `file`, with an optional `backing` and `data-file` (null: none, not even the header's). */
export type Qcow2NodeOptions = DriverNodeOptions<'qcow2', (typeof qcow2Driver)['schema']> & {
  /** The node holding the qcow2 image. */
  file: ChildNodeOptions;
  /** The backing image (QEMU `backing`); default: the one the header names, null: none. */
  backing?: ChildNodeOptions | null;
  /** The external data file (QEMU `data-file`); default: the one the header names, null: none. */
  'data-file'?: ChildNodeOptions | null;
};
/** Options of a `vpc` (VHD) node over its `file`, with an optional `backing`: a differencing image's parent (default: the one its locators name, null: none). */
export type VpcNodeOptions = DriverNodeOptions<'vpc', (typeof vpcDriver)['schema']> & {
  /** The node holding the VHD image. */
  file: ChildNodeOptions;
  /** The parent of a differencing image (QEMU `backing`); default: found through the image's parent locators, null: none. */
  backing?: ChildNodeOptions | null;
};

/** Options of a `vhdx` node (Hyper-V's VHDX) over its `file`, with the parent of a differencing image as `backing`. */
export type VhdxNodeOptions = DriverNodeOptions<'vhdx', (typeof vhdxDriver)['schema']> & {
  /** The node holding the VHDX image. */
  file: ChildNodeOptions;
  /** A differencing image's parent; default: the one its parent locator names, null: none (unwritten blocks read as zeros). */
  backing?: ChildNodeOptions | null;
};

/** Options of a `vdi` node (VirtualBox) over its `file`. */
export type VdiNodeOptions = DriverNodeOptions<'vdi', (typeof vdiDriver)['schema']> & {
  /** The node holding the VDI image. */
  file: ChildNodeOptions;
};
/** Options of a `vmdk` node over its `file` (a sparse image or a descriptor), with an optional `backing` (the parent). */
export type VmdkNodeOptions = Omit<DriverNodeOptions<'vmdk', (typeof vmdkDriver)['schema']>, 'backingChain'> & {
  /** The node holding the sparse image or the descriptor (extent files it names open beside it). */
  file: ChildNodeOptions;
  /** The parent image (QEMU `backing`); default: the one the descriptor names, null: none. */
  backing?: ChildNodeOptions | null;
};

/**
 * Options of a node whose format is probed (`driver: 'auto'`, QEMU's format-less `-drive file=`): the
 * `file` child opens, its first bytes pick a format driver (qcow2 by its magic, else raw), which opens
 * over that same child with `snapshot` and the options under its name in `formatOptions`.
 */
export type ProbedNodeOptions = {
  /** Probe the format. */
  driver: 'auto';
  /** The node whose first bytes are probed, and which the format driver then opens. */
  file: ChildNodeOptions;
  /** Internal snapshot to open (qcow2's `snapshot`); refused if the probed format has none. */
  snapshot?: string;
  /** Options for the format driver the probe picks, by its name. */
  formatOptions?: {
    /** Options if the image is qcow2. */
    qcow2?: Omit<Qcow2NodeOptions, 'driver' | 'file'>;
    /** Options if the image is raw. */
    raw?: Omit<RawNodeOptions, 'driver' | 'file'>;
    /** Options if the image is vpc (VHD). */
    vpc?: Omit<VpcNodeOptions, 'driver' | 'file'>;
  };
} & CommonNodeOptions;

/**
 * The built-in drivers' options by driver name. In Node, host-options.ts adds the host drivers
 * (file, nbd, rbd) to it; the browser build has only these.
 */
export interface BuiltinDriverOptions {
  /** See {@link MemoryNodeOptions}. */
  memory: MemoryNodeOptions;
  /** See {@link NullNodeOptions}. */
  null: NullNodeOptions;
  /** See {@link HttpNodeOptions}. */
  http: HttpNodeOptions;
  /** See {@link RawNodeOptions}. */
  raw: RawNodeOptions;
  /** See {@link BlkdebugNodeOptions}. */
  blkdebug: BlkdebugNodeOptions;
  /** See {@link ThrottleNodeOptions}. */
  throttle: ThrottleNodeOptions;
  /** See {@link Qcow2NodeOptions}. */
  qcow2: Qcow2NodeOptions;
  /** See {@link VpcNodeOptions}. */
  vpc: VpcNodeOptions;
  /** See {@link ProbedNodeOptions}. */
  auto: ProbedNodeOptions;
  /** See {@link VhdxNodeOptions}. */
  vhdx: VhdxNodeOptions;
  /** See {@link VdiNodeOptions}. */
  vdi: VdiNodeOptions;
  /** See {@link VmdkNodeOptions}. */
  vmdk: VmdkNodeOptions;
}

/** Options of a node of any built-in driver, told apart by `driver`. */
export type BuiltinNodeOptions = BuiltinDriverOptions[keyof BuiltinDriverOptions];

/** The names of the built-in drivers. */
export type BuiltinDriverName = BuiltinNodeOptions['driver'];

/** Every key of any member of a union. */
type KeysOfAny<T> = T extends unknown ? keyof T : never;

/** The options of built-in driver `D`. */
type OptionsOf<D> = Extract<BuiltinNodeOptions, { driver: D }>;

/** What built-in driver `D` takes under key `K`. */
type ValueOf<D, K> = OptionsOf<D> extends infer T ? (T extends unknown ? (K extends keyof T ? T[K] : never) : never) : never;

/**
 * Whether `V` may be given where `T` is taken: a literal (`'maybe'`, `7`, `true`) must fit;
 * a value known only by its type (`string`, `number`, `boolean`) or an object is left to the
 * check when the node opens (objects given for a child are checked key by key).
 */
type Fits<V, T> = [V] extends [T] ? true : string extends V ? true : number extends V ? true : boolean extends V ? true : V extends object ? true : false;

/**
 * For options `O` of a built-in driver: `never` for every key its driver does not take, the
 * driver's type for a literal value that does not fit, and the same, recursively, for the
 * options given for its children. Nothing is asked of options of other drivers.
 */
type KnownKeys<O, Extra extends PropertyKey> = O extends { readonly driver: infer D }
  ? D extends BuiltinDriverName
    ? {
        [K in keyof O]: K extends Extra ? unknown : K extends KeysOfAny<OptionsOf<D>> ? (Fits<O[K], ValueOf<D, K>> extends true ? KnownKeys<O[K], never> : ValueOf<D, K>) : never;
      }
    : unknown
  : unknown;

/**
 * Options the compiler checks as far as their types tell (the rest is checked when the node
 * opens): of a driver added with registerDriver, typed as {@link NodeOptions}, or of a built-in
 * driver with values only known by their type (a `string` where the driver takes `'on' | 'off'`).
 * A key that a built-in driver does not take, or a literal value it does not accept, at the top
 * or in a child's options, fails to compile. `Extra`: further keys allowed at the top (a drive's own).
 */
export type KeyCheckedOptions<O, Extra extends PropertyKey = never> = O & KnownKeys<O, Extra>;
