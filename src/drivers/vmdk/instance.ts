import { BlockError } from '../../errors.js';
import type { BlockStatus, DriverInstance } from '../../node/driver.js';
import type { BlockNode } from '../../node/node.js';
import { newCid, withCid } from './cid.js';
import type { OpenExtent } from './extent.js';
import type { OpenedDisk } from './open-extents.js';

/** An open VMDK disk: its extents in guest order, and the backing (parent) node if it has one. */
export interface VmdkDisk extends OpenedDisk {
  nodeName: string;
  backing: () => BlockNode | undefined;
}

/** The extent holding guest byte `offset` (extents are few and sorted: binary search). */
function extentAt(extents: OpenExtent[], offset: number): OpenExtent {
  let lo = 0;
  let hi = extents.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (extents[mid].extent.start <= offset) lo = mid;
    else hi = mid - 1;
  }
  return extents[lo];
}

/** The operations of an open VMDK node over its extents. */
export function vmdkInstance(d: VmdkDisk): DriverInstance {
  const { extents, nodeName } = d;
  const last = extents[extents.length - 1];
  const size = last ? last.extent.start + last.extent.length : 0;

  // Plain loops over the extents a request spans: no closure per request on the I/O path.
  const read = async (offset: number, buffer: Uint8Array): Promise<void> => {
    let pos = 0;
    while (pos < buffer.length) {
      const { extent } = extentAt(extents, offset + pos);
      const at = offset + pos - extent.start;
      const n = Math.min(buffer.length - pos, extent.length - at);
      await extent.read(at, buffer.subarray(pos, pos + n));
      pos += n;
    }
  };
  // The first write gives the image a new CID (QEMU vmdk_write_cid): overlays made over the old
  // content see that their parent changed.
  let cidWritten: Promise<void> | undefined;
  const writeNewCid = async () => {
    const area = d.descriptorArea;
    const cid = newCid();
    const bytes = area && withCid(area.bytes, cid);
    if (!area || !bytes || (area.fixed && bytes.length > area.bytes.length)) return;
    await area.node.write(area.offset, bytes, !area.fixed);
    await area.node.flush();
    area.bytes = bytes;
    d.descriptor.cid = cid;
  };
  const write = async (offset: number, data: Uint8Array | undefined, length: number): Promise<void> => {
    if (cidWritten === undefined) {
      cidWritten = writeNewCid().catch((e: unknown) => {
        cidWritten = undefined;
        throw e;
      });
    }
    await cidWritten;
    let pos = 0;
    while (pos < length) {
      const e = extentAt(extents, offset + pos);
      if (e.readOnly) throw new BlockError('EROFS', `vmdk: extent '${e.filename}' is read-only (RDONLY in the descriptor)`, { offset: offset + pos, node: nodeName });
      const at = offset + pos - e.extent.start;
      const n = Math.min(length - pos, e.extent.length - at);
      if (data) await e.extent.write(at, data.subarray(pos, pos + n));
      else await e.extent.writeZeroes(at, n);
      pos += n;
    }
  };

  const flush = async () => {
    // A stream's appended grains get their table entries first, then the files make all durable.
    for (const e of extents) if ('grainBytes' in e.extent) await e.extent.commitAppended();
    const files = new Set(extents.map((e) => e.extent.file));
    for (const f of files) await f.flush();
  };

  return {
    alignment: 1,
    length: () => size,
    read,
    write: (offset, data) => write(offset, data, data.length),
    writeZeroes: (offset, length) => write(offset, undefined, length),
    // Stream extents take whole grains compressed; other extents store the grain as it is (QEMU too).
    writeCompressed: (offset, data) => write(offset, data, data.length),
    // VMDK has no discard (QEMU neither): the range keeps its data.
    discard: async () => {},
    flush,
    async blockStatus(offset, length): Promise<BlockStatus> {
      const e = extentAt(extents, offset);
      const at = offset - e.extent.start;
      const r = await e.extent.run(at, Math.min(length, e.extent.length - at));
      const file = e.extent.file;
      if (r.kind === 'data') {
        if (e.type === 'FLAT' || e.type === 'VMFS') {
          // As QEMU (BDRV_BLOCK_RECURSE): a flat extent is data, zero where its file reads zeros.
          if (r.host >= file.length) return { offset, length: r.length, data: true, zero: true, allocated: true, depth: 0, hostOffset: r.host, hostNode: file.name };
          const f = await file.blockStatus(r.host, Math.min(r.length, file.length - r.host));
          return { offset, length: f.length, data: true, zero: f.zero, allocated: true, depth: 0, hostOffset: r.host, hostNode: file.name };
        }
        return { offset, length: r.length, data: true, zero: false, allocated: true, depth: 0, hostOffset: r.host, hostNode: file.name };
      }
      if (r.kind === 'compressed') return { offset, length: r.length, data: true, zero: false, allocated: true, depth: 0 };
      if (r.kind === 'zero') return { offset, length: r.length, data: false, zero: true, allocated: true, depth: 0 };
      const backing = d.backing();
      if (backing && offset < backing.length) {
        const s = await backing.blockStatus(offset, Math.min(r.length, backing.length - offset));
        return { ...s, offset, depth: s.depth + 1 };
      }
      return { offset, length: r.length, data: false, zero: true, allocated: false, depth: 0 };
    },
    // Written data is on its way to the files already; make it durable as QEMU's close does.
    async close() {
      for (const e of extents) if ('grainBytes' in e.extent) await e.extent.close();
      await flush();
    },
    info: () => ({
      format: 'vmdk',
      virtualSize: size,
      cid: d.descriptor.cid,
      parentCid: d.descriptor.parentCid,
      createType: d.createType,
      backingFile: d.descriptor.parentFileNameHint,
      backingFormat: d.descriptor.parentFileNameHint === undefined ? undefined : 'vmdk',
      backingNode: d.backing()?.name,
      extents: extents.map((e) => e.extent.info(e.filename, e.type)),
      clusterSize: extents[0] && 'grainBytes' in extents[0].extent ? extents[0].extent.grainBytes : undefined,
      formatSpecific: formatSpecific(d),
    }),
  };
}

/** qemu-img info's "format-specific" object for a vmdk, keys in its order. */
function formatSpecific(d: VmdkDisk): Record<string, unknown> {
  return {
    type: 'vmdk',
    data: {
      cid: d.descriptor.cid,
      'parent-cid': d.descriptor.parentCid,
      'create-type': d.createType,
      extents: d.extents.map(({ extent, filename, type }) => {
        const sparse = 'grainBytes' in extent;
        return {
          ...(sparse && extent.layout.compressed ? { compressed: true } : {}),
          'virtual-size': extent.length,
          filename,
          ...(sparse ? { 'cluster-size': extent.grainBytes } : {}),
          format: type,
        };
      }),
    },
  };
}
