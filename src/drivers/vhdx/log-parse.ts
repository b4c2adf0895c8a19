// The VHDX log as pure functions over its bytes (spec 2.3; QEMU block/vhdx-log.c): finding the active
// sequence of entries and what replaying it writes.
import { BlockError } from '../../errors.js';
import { checksumWithField } from './crc32c.js';
import { guidEquals } from './guid.js';
import { safeNumber } from './header.js';
import * as L from './limits.js';

/** One write a log entry makes when replayed: `data` (4 KiB) or `zeroLength` zero bytes at `fileOffset`. */
export interface LogWrite {
  fileOffset: number;
  data?: Uint8Array;
  zeroLength?: number;
}

/** A valid log entry. */
export interface LogEntry {
  /** Where it starts in the log (bytes from the log's start). */
  position: number;
  length: number;
  sequence: bigint;
  /** The file size the entry needs before it is replayed (the file has been truncated if smaller). */
  flushedFileOffset: number;
  /** The file size once it is replayed. */
  lastFileOffset: number;
  writes: LogWrite[];
}

/** `length` bytes of the ring `log` from `position`, wrapping at its end. */
function ring(log: Uint8Array, position: number, length: number): Uint8Array {
  if (position + length <= log.length) return log.subarray(position, position + length);
  const b = new Uint8Array(length);
  const first = log.length - position;
  b.set(log.subarray(position), 0);
  b.set(log.subarray(0, length - first), first);
  return b;
}

/** Sectors holding the entry header and `count` descriptors: 126 fit beside the header, 128 in each further sector. */
export function descriptorSectors(count: number): number {
  return Math.ceil((count + 2) / 128);
}

/**
 * The entry at `position` of `log` if it is valid (QEMU vhdx_log_hdr_is_valid, vhdx_log_desc_is_valid,
 * and the checksum over the whole entry): signature, length (whole sectors, inside the log), a
 * non-zero sequence number, the header's log GUID, descriptors and data sectors that all carry the
 * entry's sequence number.
 */
export function parseLogEntry(log: Uint8Array, position: number, logGuid: Uint8Array, budget?: ChecksumBudget): LogEntry | undefined {
  if (position % L.LOG_SECTOR_BYTES !== 0 || position + L.LOG_SECTOR_BYTES > log.length) return undefined;
  const head = new DataView(log.buffer, log.byteOffset + position, L.LOG_ENTRY_HEADER_BYTES);
  if (head.getUint32(0, true) !== L.LOG_SIGNATURE) return undefined;
  const length = head.getUint32(8, true);
  if (length === 0 || length % L.LOG_SECTOR_BYTES !== 0 || length > log.length) return undefined;
  const sequence = head.getBigUint64(16, true);
  if (sequence === 0n) return undefined;
  if (!guidEquals(log, position + 32, logGuid)) return undefined;
  const count = head.getUint32(24, true);
  const descSectors = descriptorSectors(count);
  if (descSectors * L.LOG_SECTOR_BYTES > length) return undefined;
  budget?.spend(length, position);
  const entry = ring(log, position, length);
  const v = new DataView(entry.buffer, entry.byteOffset, entry.byteLength);
  if (checksumWithField(entry, 4) !== v.getUint32(4, true)) return undefined;
  const writes: LogWrite[] = [];
  let dataSector = descSectors;
  for (let i = 0; i < count; i++) {
    const d = L.LOG_ENTRY_HEADER_BYTES + i * L.LOG_DESCRIPTOR_BYTES;
    const signature = v.getUint32(d, true);
    const fileOffset = safeNumber(v.getBigUint64(d + 16, true));
    if (v.getBigUint64(d + 24, true) !== sequence || fileOffset % L.LOG_SECTOR_BYTES !== 0) return undefined;
    if (signature === L.LOG_ZERO_SIGNATURE) {
      const zeroLength = safeNumber(v.getBigUint64(d + 8, true));
      if (zeroLength % L.LOG_SECTOR_BYTES !== 0) return undefined;
      writes.push({ fileOffset, zeroLength });
    } else if (signature === L.LOG_DESC_SIGNATURE) {
      if ((dataSector + 1) * L.LOG_SECTOR_BYTES > length) return undefined;
      const s = dataSector * L.LOG_SECTOR_BYTES;
      const high = v.getUint32(s + 4, true);
      const low = v.getUint32(s + L.LOG_SECTOR_BYTES - 4, true);
      if (v.getUint32(s, true) !== L.LOG_DATA_SIGNATURE || ((BigInt(high) << 32n) | BigInt(low)) !== sequence) return undefined;
      // The sector as it goes to the file: 8 leading bytes from the descriptor, 4084 from the data sector, 4 trailing from the descriptor.
      const data = new Uint8Array(L.LOG_SECTOR_BYTES);
      data.set(entry.subarray(d + 8, d + 16), 0);
      data.set(entry.subarray(s + 8, s + 8 + L.LOG_DATA_PAYLOAD_BYTES), 8);
      data.set(entry.subarray(d + 4, d + 8), 8 + L.LOG_DATA_PAYLOAD_BYTES);
      writes.push({ fileOffset, data });
      dataSector++;
    } else return undefined;
  }
  return {
    position,
    length,
    sequence,
    flushedFileOffset: safeNumber(head.getBigUint64(48, true)),
    lastFileOffset: safeNumber(head.getBigUint64(56, true)),
    writes,
  };
}

/**
 * Bytes a log search may checksum: three times the log and a MiB. A real log's entries with the
 * current log GUID lie side by side, so its search checksums them twice at most (a sequence that
 * wraps around the end is met twice); a hostile log whose every sector claims a long entry would
 * cost the log's size per sector (a hang) without this bound.
 */
export class ChecksumBudget {
  private left: number;

  constructor(logLength: number) {
    this.left = 3 * logLength + L.MiB;
  }

  spend(n: number, position: number): void {
    this.left -= n;
    if (this.left < 0) {
      throw new BlockError('ECORRUPT', `vhdx: the log's entries overlap (the search checksums more than three times the log, at log offset ${position})`, { field: 'log', offset: position });
    }
  }
}

/**
 * The active sequence (QEMU vhdx_log_search): the log is scanned once, sector by sector; from each
 * valid entry a chain follows while the next entry is valid with the next sequence number; the chain
 * with the highest sequence number wins. Empty if no entry is valid.
 */
export function findActiveSequence(log: Uint8Array, logGuid: Uint8Array): LogEntry[] {
  const budget = new ChecksumBudget(log.length);
  let best: LogEntry[] = [];
  let position = 0;
  while (position < log.length) {
    const first = parseLogEntry(log, position, logGuid, budget);
    if (!first) {
      position += L.LOG_SECTOR_BYTES;
      continue;
    }
    const chain = [first];
    let used = first.length;
    let next = (position + first.length) % log.length;
    while (used < log.length) {
      const e = parseLogEntry(log, next, logGuid, budget);
      if (!e || e.sequence !== chain[chain.length - 1].sequence + 1n || used + e.length > log.length) break;
      chain.push(e);
      used += e.length;
      next = (next + e.length) % log.length;
    }
    if (best.length === 0 || chain[chain.length - 1].sequence > best[best.length - 1].sequence) best = chain;
    // Continue after the chain; a chain that wrapped past the end of the log ends the scan.
    const end = position + used;
    if (end >= log.length) break;
    position = end;
  }
  return best;
}
