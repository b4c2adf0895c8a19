/**
 * QMP block-export-add / block-export-del over an {@link NbdServer} (QAPI qapi/block-export.json),
 * the {@link ExportManager} that `blocklayer serve --qmp` and library users hand to a QmpServer.
 */
import type { Drive } from '../drive.js';
import { isWellFormedUtf16 } from '../drivers/nbd/protocol.js';
import { BlockError } from '../errors.js';
import type { BlockLayer } from '../layer.js';
import type { DirtyBitmap } from '../node/dirty-bitmap.js';
import type { BlockNode } from '../node/node.js';
import type { NbdServer } from '../nbd/server.js';
import { type ExportManager, generic, only, optBool, str } from './commands.js';
import { isWellFormedId } from '../ids.js';

/** An export by its id: its NBD name, the drive it serves (whose root a snapshot or mirror may change), the drive made for it (absent: a listed drive's). */
interface ExportRecord {
  readonly name: string;
  readonly drive: Drive | undefined;
  readonly internal: Drive | undefined;
}

/** QAPI BlockExportType: the types QEMU knows; only nbd is served here. */
const EXPORT_TYPES = ['nbd', 'vhost-user-blk', 'fuse', 'vduse-blk'];

/** Keys of QAPI BlockExportOptions (common part and the nbd branch). */
const EXPORT_ADD_KEYS = ['type', 'id', 'node-name', 'writable', 'writethrough', 'fixed-iothread', 'iothread', 'allow-other', 'name', 'description', 'bitmaps', 'allocation-depth'];


/**
 * QAPI `bitmaps: [BlockDirtyBitmapOrStr]`, checked for shape as QEMU's visitor does: a name
 * (searched from the exported node down by the NBD server) or `{node, name}`.
 */
function bitmapArgs(value: unknown): (string | { node: string; name: string })[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) throw generic(`Invalid parameter type for 'bitmaps', expected: array`);
  return value.map((item: unknown, i) => {
    if (typeof item === 'string') return item;
    // QEMU 7.2 names the member 'null' in this one message.
    if (typeof item !== 'object' || item === null || Array.isArray(item)) throw generic(`Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr`);
    const o = item as Record<string, unknown>;
    const at = `bitmaps[${i}]`;
    for (const key of Object.keys(o)) if (key !== 'node' && key !== 'name') throw generic(`Parameter '${at}.${key}' is unexpected`);
    for (const key of ['node', 'name']) {
      if (o[key] === undefined) throw generic(`Parameter '${at}.${key}' is missing`);
      if (typeof o[key] !== 'string') throw generic(`Invalid parameter type for '${at}.${key}', expected: string`);
    }
    return { node: o.node as string, name: o.name as string };
  });
}

/** A QMP string argument that names or describes an export: a lone surrogate (JSON \udcff) has no UTF-8 form. */
function qmpUtf8(value: string, key: string): string {
  if (!isWellFormedUtf16(value)) throw new BlockError('EINVAL', `Parameter '${key}' is not valid UTF-8 (a lone surrogate): ${JSON.stringify(value)}`, { field: key });
  return value;
}

/**
 * `{type: 'nbd', id, node-name, name?, writable?, description?}` exports the drive whose node
 * name (or drive id) is `node-name` under `name` (default: the node name); `{id, mode?}` removes
 * it (`safe`, the default, refuses while clients are connected, as QEMU's "still in use"; `hard`
 * disconnects them: they are no longer read, their requests in flight go at once, throttling
 * lifted, and are answered before the disconnect — QEMU cuts the connection without answering,
 * the requests still completing).
 */
export class NbdExportManager implements ExportManager {
  /** Export id -> the export, in the order they were added. */
  private readonly ids = new Map<string, ExportRecord>();
  /** Who hears BLOCK_EXPORT_DELETED (the QMP servers over this manager). */
  private readonly listeners = new Set<(event: string, data: Record<string, unknown>) => void>();
  /** Clients connected per export name. */
  private readonly users = new Map<string, number>();

  constructor(
    private readonly layer: BlockLayer,
    private readonly server: NbdServer,
  ) {
    server.on('connect', (c) => {
      if (c.export !== null) this.users.set(c.export, (this.users.get(c.export) ?? 0) + 1);
    });
    server.on('disconnect', (c) => {
      if (c.export === null) return;
      const n = (this.users.get(c.export) ?? 1) - 1;
      if (n > 0) this.users.set(c.export, n);
      else this.users.delete(c.export);
    });
  }

  /** Records an export made outside QMP (the command line) so block-export-del can remove it; `drive` is what it serves. */
  adopt(id: string, name: string, drive?: Drive): void {
    this.ids.set(id, { name, drive, internal: undefined });
  }

  /** QAPI BlockExportInfo of every export, newest first (QEMU prepends to its list). */
  list(): Record<string, unknown>[] {
    return [...this.ids].reverse().map(([id, e]) => ({ id, type: 'nbd', 'node-name': e.drive?.node.name ?? e.name, 'shutting-down': false }));
  }

  /** Calls `listener` with the export events (BLOCK_EXPORT_DELETED); returns the function that stops it. */
  watch(listener: (event: string, data: Record<string, unknown>) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async add(args: Record<string, unknown>): Promise<void> {
    only(args, EXPORT_ADD_KEYS);
    const type = str(args, 'type', true);
    if (!EXPORT_TYPES.includes(type)) throw generic(`Parameter 'type' does not accept value '${type}'`);
    const id = str(args, 'id', true);
    const nodeName = str(args, 'node-name', true);
    const name = qmpUtf8(str(args, 'name', false) ?? nodeName, 'name');
    const description = str(args, 'description', false);
    if (description !== undefined) qmpUtf8(description, 'description');
    const writable = optBool(args, 'writable') ?? false;
    const allocationDepth = optBool(args, 'allocation-depth') ?? false;
    const wanted = bitmapArgs(args.bitmaps);
    optBool(args, 'writethrough');
    if (!isWellFormedId(id)) throw generic('Invalid block export id');
    if (this.ids.has(id)) throw generic(`Block export id '${id}' is already in use`);
    if (type !== 'nbd') throw generic('No driver found for the requested export type');
    if (args.iothread !== undefined) throw generic(`iothread "${String(args.iothread)}" not found`);
    const listed = this.findDrive(nodeName);
    const node = listed?.node ?? this.layer.findNode(nodeName);
    if (node === undefined) throw generic(`Cannot find device='' nor node-name='${nodeName}'`);
    if (writable && node.readOnly) throw generic('Cannot export read-only node as writable');
    // A read-write node whose writes would end in a read-only node below (raw over a read-only file): QEMU's WRITE permission fails there.
    if (writable && node.writeBlocker() !== undefined) throw generic('Block node is read-only');
    if (this.server.exportNames.includes(name)) throw generic(`NBD server already has export named '${name}'`);
    const bitmaps = wanted?.map((w) => (typeof w === 'string' ? w : this.lookupBitmap(w)));
    // A node no listed drive serves gets a drive of its own (QEMU's export BlockBackend), closed with the export.
    const internal = listed === undefined ? this.layer.attachDrive(node, { id, internal: true }) : undefined;
    try {
      this.server.addExport({
        name,
        drive: listed ?? internal!,
        readOnly: !writable,
        ...(description !== undefined ? { description } : {}),
        ...(bitmaps !== undefined ? { bitmaps } : {}),
        ...(allocationDepth ? { allocationDepth } : {}),
      });
    } catch (e) {
      await internal?.close();
      throw e;
    }
    this.ids.set(id, { name, drive: listed ?? internal, internal });
  }

  async del(args: Record<string, unknown>): Promise<void> {
    only(args, ['id', 'mode']);
    const id = str(args, 'id', true);
    const mode = str(args, 'mode', false) ?? 'safe';
    if (mode !== 'safe' && mode !== 'hard') throw generic(`Parameter 'mode' does not accept value '${mode}'`);
    const record = this.ids.get(id);
    if (record === undefined) throw generic(`Export '${id}' is not found`);
    const { name, internal } = record;
    if (mode === 'safe' && (this.users.get(name) ?? 0) > 0) throw generic(`export '${id}' still in use`);
    this.ids.delete(id);
    await this.server.removeExport(name);
    await internal?.close();
    for (const listener of this.listeners) listener('BLOCK_EXPORT_DELETED', { id });
  }

  /** `{node, name}`: a bitmap of any node (QEMU block_dirty_bitmap_lookup). */
  private lookupBitmap(w: { node: string; name: string }): DirtyBitmap {
    const node = this.findNode(w.node);
    if (node === undefined) throw generic(`Node '${w.node}' not found`);
    const bitmap = node.bitmaps.find(w.name);
    if (bitmap === undefined) throw generic(`Dirty bitmap '${w.name}' not found`);
    return bitmap;
  }

  /** A node by node name, or a drive's bitmap node by the drive's id (QEMU bdrv_lookup_bs(node, node)). */
  private findNode(name: string): BlockNode | undefined {
    const seen = new Set<BlockNode>();
    const search = (n: BlockNode): BlockNode | undefined => {
      if (seen.has(n)) return undefined;
      seen.add(n);
      if (n.name === name) return n;
      for (const child of n.children.values()) {
        const found = search(child);
        if (found !== undefined) return found;
      }
      return undefined;
    };
    const drives = this.layer.listDrives().filter((d) => !d.closed);
    for (const d of drives) if (d.id === name) return d.bitmapNode;
    for (const d of drives) {
      const found = search(d.node);
      if (found !== undefined) return found;
    }
    return this.layer.findNode(name);
  }

  private findDrive(nodeName: string): Drive | undefined {
    return this.layer.listDrives().find((d) => !d.closed && d.node.name === nodeName) ?? this.layer.drive(nodeName);
  }
}
