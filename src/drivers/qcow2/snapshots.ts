import { BlockError } from '../../errors.js';
import type { Qcow2Header } from './header.js';
import * as L from './limits.js';

/** One internal snapshot (what `qemu-img snapshot -l` lists). */
export interface Qcow2Snapshot {
  id: string;
  name: string;
  /** Guest disk size at the time of the snapshot. */
  size: number;
  /** Seconds and nanoseconds since the epoch when it was taken. */
  date: { sec: number; nsec: number };
  /** Guest clock in nanoseconds. */
  vmClockNs: number;
  vmStateSize: number;
  l1TableOffset: number;
  l1Size: number;
}

type Reader = (offset: number, length: number) => Promise<Uint8Array>;

const corrupt = (field: string, offset: number, message: string) =>
  new BlockError('ECORRUPT', `qcow2 snapshot table: ${field} ${message} (at byte ${offset})`, { field, offset });

/** Reads and validates the snapshot table (bounded by MAX_SNAPSHOT_TABLE_BYTES). */
export async function readSnapshots(h: Qcow2Header, fileSize: number, read: Reader): Promise<Qcow2Snapshot[]> {
  if (h.nbSnapshots === 0) return [];
  const end = Math.min(fileSize, h.snapshotsOffset + L.MAX_SNAPSHOT_TABLE_BYTES);
  // Read in chunks as needed, never past the cap.
  let buf = Buffer.alloc(0);
  const bufStart = h.snapshotsOffset;
  const ensure = async (at: number, n: number) => {
    if (at + n > end) throw corrupt('table', at, `runs past the end of the file or the ${L.MAX_SNAPSHOT_TABLE_BYTES}-byte limit`);
    if (at + n <= bufStart + buf.length) return;
    const want = Math.min(end - bufStart, Math.max(at + n - bufStart, buf.length * 2, 65536));
    buf = Buffer.from(await read(bufStart, want));
  };
  const out: Qcow2Snapshot[] = [];
  let at = h.snapshotsOffset;
  for (let i = 0; i < h.nbSnapshots; i++) {
    await ensure(at, 40);
    const o = at - bufStart;
    const hi = buf.readUInt32BE(o);
    if (hi > 0x1fffff) throw corrupt('l1_table_offset', at, 'is too large');
    const l1TableOffset = hi * 2 ** 32 + buf.readUInt32BE(o + 4);
    const l1Size = buf.readUInt32BE(o + 8);
    const idSize = buf.readUInt16BE(o + 12);
    const nameSize = buf.readUInt16BE(o + 14);
    const sec = buf.readUInt32BE(o + 16);
    const nsec = buf.readUInt32BE(o + 20);
    const vmClockNs = Number(buf.readBigUInt64BE(o + 24));
    const vmState32 = buf.readUInt32BE(o + 32);
    const extraSize = buf.readUInt32BE(o + 36);
    if (extraSize > L.MAX_SNAPSHOT_EXTRA) throw corrupt('extra_data_size', at + 36, `${extraSize} is above ${L.MAX_SNAPSHOT_EXTRA}`);
    if (l1Size * 8 > L.MAX_L1_BYTES) throw corrupt('l1_size', at + 8, `${l1Size} entries exceed the limit`);
    if (l1TableOffset % h.clusterSize !== 0 || (l1Size > 0 && l1TableOffset + l1Size * 8 > fileSize)) {
      throw corrupt('l1_table_offset', at, `${l1TableOffset} is unaligned or outside the file`);
    }
    const total = 40 + extraSize + idSize + nameSize;
    await ensure(at, total);
    const e = at + 40 - bufStart;
    let size = h.size;
    let vmStateSize = vmState32;
    if (extraSize >= 8) vmStateSize = Number(buf.readBigUInt64BE(e));
    if (extraSize >= 16) {
      const ds = buf.readBigUInt64BE(e + 8);
      if (ds > BigInt(L.MAX_VIRTUAL_SIZE)) throw new BlockError('ENOTSUP', `qcow2 snapshot disk size ${ds} exceeds 2^53`, { field: 'disk_size', offset: at + 48 });
      size = Number(ds);
    }
    const idAt = e + extraSize;
    out.push({
      id: buf.toString('utf8', idAt, idAt + idSize),
      name: buf.toString('utf8', idAt + idSize, idAt + idSize + nameSize),
      size,
      date: { sec, nsec },
      vmClockNs,
      vmStateSize,
      l1TableOffset,
      l1Size,
    });
    at += Math.ceil(total / 8) * 8;
  }
  return out;
}
