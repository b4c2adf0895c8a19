/**
 * QMP block-export-add / block-export-del over an {@link NbdServer} (QAPI qapi/block-export.json),
 * the {@link ExportManager} that `blocklayer serve --qmp` and library users hand to a QmpServer.
 */
import type { Drive } from '../drive.js';
import { isWellFormedUtf16 } from '../drivers/nbd/protocol.js';
import { BlockError } from '../errors.js';
import type { BlockLayer } from '../layer.js';
import type { NbdServer } from '../nbd/server.js';
import { type ExportManager, generic, only, optBool, str } from './commands.js';
import { isWellFormedId } from '../ids.js';

/** QAPI BlockExportType: the types QEMU knows; only nbd is served here. */
const EXPORT_TYPES = ['nbd', 'vhost-user-blk', 'fuse', 'vduse-blk'];

/** Keys of QAPI BlockExportOptions (common part and the nbd branch). */
const EXPORT_ADD_KEYS = ['type', 'id', 'node-name', 'writable', 'writethrough', 'fixed-iothread', 'iothread', 'allow-other', 'name', 'description', 'bitmaps', 'allocation-depth'];


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
  /** Export id -> NBD export name. */
  private readonly ids = new Map<string, string>();
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

  /** Records an export made outside QMP (the command line) so block-export-del can remove it. */
  adopt(id: string, name: string): void {
    this.ids.set(id, name);
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
    optBool(args, 'writethrough');
    if (!isWellFormedId(id)) throw generic('Invalid block export id');
    if (this.ids.has(id)) throw generic(`Block export id '${id}' is already in use`);
    if (type !== 'nbd') throw generic('No driver found for the requested export type');
    if (args.iothread !== undefined) throw generic(`iothread "${String(args.iothread)}" not found`);
    const drive = this.findDrive(nodeName);
    if (drive === undefined) throw generic(`Cannot find device='' nor node-name='${nodeName}'`);
    if (writable && drive.readOnly) throw generic('Cannot export read-only node as writable');
    if (this.server.exportNames.includes(name)) throw generic(`NBD server already has export named '${name}'`);
    this.server.addExport({ name, drive, readOnly: !writable, ...(description !== undefined ? { description } : {}) });
    this.ids.set(id, name);
  }

  async del(args: Record<string, unknown>): Promise<void> {
    only(args, ['id', 'mode']);
    const id = str(args, 'id', true);
    const mode = str(args, 'mode', false) ?? 'safe';
    if (mode !== 'safe' && mode !== 'hard') throw generic(`Parameter 'mode' does not accept value '${mode}'`);
    const name = this.ids.get(id);
    if (name === undefined) throw generic(`Export '${id}' is not found`);
    if (mode === 'safe' && (this.users.get(name) ?? 0) > 0) throw generic(`export '${id}' still in use`);
    this.ids.delete(id);
    await this.server.removeExport(name);
  }

  private findDrive(nodeName: string): Drive | undefined {
    return this.layer.listDrives().find((d) => !d.closed && d.node.name === nodeName) ?? this.layer.drive(nodeName);
  }
}
