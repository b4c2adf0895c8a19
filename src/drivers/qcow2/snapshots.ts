import { BlockError } from '../../errors.js';
import { cString, type Qcow2Header } from './header.js';
import * as L from './limits.js';

/** One internal snapshot (what `qemu-img snapshot -l` lists). */
export interface Qcow2Snapshot {
  /** Unique id (QEMU numbers them 1, 2, …). */
  id: string;
  /** Name given at creation (may be empty). */
  name: string;
  /** Guest disk size at the time of the snapshot. */
  size: number;
  /** Seconds and nanoseconds since the epoch when it was taken. */
  date: {
    /** Seconds since the epoch. */
    sec: number;
    /** Nanoseconds within that second. */
    nsec: number;
  };
  /** Guest clock in nanoseconds. */
  vmClockNs: number;
  /** Bytes of saved VM state (0 for a disk-only snapshot). */
  vmStateSize: number;
  /** Guest instruction count (-1: not recorded, as in entries with under 24 bytes of extra data). */
  icount: number;
  /** File offset of the snapshot's L1 table. */
  l1TableOffset: number;
  /** Entries in the snapshot's L1 table. */
  l1Size: number;
  /** Where this entry starts in the file. */
  entryOffset: number;
}

/** A snapshot as QMP and qemu-img info --output=json give it (QAPI SnapshotInfo; its icount is not known here). */
export function qapiSnapshotInfo(s: Pick<Qcow2Snapshot, 'id' | 'name' | 'vmStateSize' | 'date' | 'vmClockNs'>): Record<string, unknown> {
  return {
    id: s.id,
    name: s.name,
    'vm-state-size': s.vmStateSize,
    'date-sec': s.date.sec,
    'date-nsec': s.date.nsec,
    'vm-clock-sec': Math.floor(s.vmClockNs / 1e9),
    'vm-clock-nsec': s.vmClockNs % 1e9,
  };
}

type Reader = (offset: number, length: number) => Promise<Uint8Array>;

const corrupt = (field: string, offset: number, message: string) =>
  new BlockError('ECORRUPT', `qcow2 snapshot table: ${field} ${message} (at byte ${offset})`, { field, offset });

/**
 * Reads the snapshot table as QEMU's qcow2_read_snapshots does. Fatal at open: extra data above
 * MAX_SNAPSHOT_EXTRA and a table above MAX_SNAPSHOT_TABLE_BYTES. Bytes past the end of the file
 * read as zeros. A snapshot's own L1 table is not checked here, only when the snapshot is
 * opened (checkSnapshotL1), so a broken entry never keeps the active layer from opening.
 */
export async function readSnapshots(h: Qcow2Header, read: Reader): Promise<Qcow2Snapshot[]> {
  if (h.nbSnapshots === 0) return [];
  // Entries are read in growing chunks, never more than the table limit plus one entry.
  let buf = Buffer.alloc(0);
  const bufStart = h.snapshotsOffset;
  const ensure = async (at: number, n: number) => {
    if (at + n <= bufStart + buf.length) return;
    const want = Math.max(at + n - bufStart, Math.min(buf.length * 2, L.MAX_SNAPSHOT_TABLE_BYTES), 65536);
    buf = Buffer.from(await read(bufStart, want));
  };
  const out: Qcow2Snapshot[] = [];
  let at = h.snapshotsOffset;
  for (let i = 0; i < h.nbSnapshots; i++) {
    await ensure(at, 40);
    const o = at - bufStart;
    const l1TableOffset = buf.readUInt32BE(o) * 2 ** 32 + buf.readUInt32BE(o + 4);
    const l1Size = buf.readUInt32BE(o + 8);
    const idSize = buf.readUInt16BE(o + 12);
    const nameSize = buf.readUInt16BE(o + 14);
    const sec = buf.readUInt32BE(o + 16);
    const nsec = buf.readUInt32BE(o + 20);
    const vmClockNs = Number(buf.readBigUInt64BE(o + 24));
    const vmState32 = buf.readUInt32BE(o + 32);
    const extraSize = buf.readUInt32BE(o + 36);
    if (extraSize > L.MAX_SNAPSHOT_EXTRA) throw corrupt('extra_data_size', at + 36, `${extraSize} of entry ${i} is above ${L.MAX_SNAPSHOT_EXTRA}`);
    const total = 40 + extraSize + idSize + nameSize;
    if (at + total - h.snapshotsOffset > L.MAX_SNAPSHOT_TABLE_BYTES) {
      throw corrupt('table', h.snapshotsOffset, `is larger than the limit of ${L.MAX_SNAPSHOT_TABLE_BYTES} bytes (entry ${i})`);
    }
    await ensure(at, total);
    const e = at + 40 - bufStart;
    // Informational sizes: QEMU reads a snapshot with the image's current virtual size.
    let size = h.size;
    let vmStateSize = vmState32;
    if (extraSize >= 8) vmStateSize = Number(buf.readBigUInt64BE(e));
    if (extraSize >= 16) size = Number(buf.readBigUInt64BE(e + 8));
    const icount = extraSize >= 24 ? Number(buf.readBigInt64BE(e + 16)) : -1;
    const idAt = e + extraSize;
    out.push({
      id: cString(buf, idAt, idSize),
      name: cString(buf, idAt + idSize, nameSize),
      size,
      date: { sec, nsec },
      vmClockNs,
      vmStateSize,
      icount,
      l1TableOffset,
      l1Size,
      entryOffset: at,
    });
    at += Math.ceil(total / 8) * 8;
  }
  return out;
}

/**
 * Checks a snapshot's L1 table before it is opened, as QEMU's qcow2_snapshot_load_tmp does:
 * at most MAX_L1_BYTES, cluster aligned. (A table past the end of the file reads as zeros.)
 */
export function checkSnapshotL1(s: Qcow2Snapshot, h: Qcow2Header): void {
  const ctx = `of snapshot '${s.name || s.id}'`;
  if (s.l1Size * 8 > L.MAX_L1_BYTES) throw corrupt('l1_size', s.entryOffset + 8, `${s.l1Size} ${ctx} exceeds the limit of ${L.MAX_L1_BYTES} bytes`);
  if (s.l1TableOffset % h.clusterSize !== 0) {
    throw corrupt('l1_table_offset', s.entryOffset, `${s.l1TableOffset} ${ctx} is not aligned to the cluster size ${h.clusterSize}`);
  }
  if (!Number.isSafeInteger(s.l1TableOffset)) {
    throw new BlockError('ENOTSUP', `qcow2 snapshot table: l1_table_offset ${ctx} is beyond 2^53 (at byte ${s.entryOffset})`, { field: 'l1_table_offset', offset: s.entryOffset });
  }
}
