import { BlockError } from '../../errors.js';
import type { BlockNode } from '../../node/node.js';
import { isZeroGuid } from './guid.js';
import type { VhdxHeader } from './header.js';
import * as L from './limits.js';
import { findActiveSequence, type LogEntry } from './log-parse.js';

/** Largest log we read to replay it (the log is read whole; QEMU's and Hyper-V's are 1 MiB by default). */
export const MAX_REPLAY_LOG_BYTES = 64 * L.MiB;

/** The active log sequence an image needs replayed, empty when its log is clean (log GUID zero, or no valid entry). */
export async function pendingLog(file: BlockNode, h: VhdxHeader, nodeName: string): Promise<LogEntry[]> {
  if (isZeroGuid(h.logGuid) || h.logLength === 0) return [];
  if (h.logLength > MAX_REPLAY_LOG_BYTES) {
    throw new BlockError('ENOTSUP', `vhdx: the log to replay is ${h.logLength} bytes, more than the ${MAX_REPLAY_LOG_BYTES} read here`, { node: nodeName, field: 'log_length' });
  }
  const log = new Uint8Array(h.logLength);
  await file.read(h.logOffset, log);
  return findActiveSequence(log, h.logGuid);
}

/**
 * Replays `entries` onto the file (QEMU vhdx_log_flush): each entry's data and zero descriptors are
 * written, the file grows to the entry's last file offset (rounded up to 1 MiB), then everything
 * is flushed (QEMU 7.2 grows the file only when last_file_offset is off a MiB boundary; the spec
 * asks for the file to reach it, so we grow it either way). Writes never reach the header section
 * or the log itself. The caller then clears the log GUID in the headers.
 */
export async function replayLog(file: BlockNode, h: VhdxHeader, entries: readonly LogEntry[], nodeName: string): Promise<void> {
  const logEnd = h.logOffset + h.logLength;
  for (const e of entries) {
    const where = h.logOffset + e.position;
    if (e.flushedFileOffset > file.length) {
      throw new BlockError('ECORRUPT', `vhdx: log entry ${e.sequence}: flushed_file_offset ${e.flushedFileOffset} is past the end of the file (${file.length} bytes); the image has been truncated`, { node: nodeName, field: 'flushed_file_offset', offset: where + 48 });
    }
    if (!Number.isSafeInteger(e.lastFileOffset) || e.lastFileOffset > L.MAX_VIRTUAL_SIZE + L.MAX_BAT_BYTES + logEnd) {
      throw new BlockError('ECORRUPT', `vhdx: log entry ${e.sequence}: last_file_offset ${e.lastFileOffset} is absurd`, { node: nodeName, field: 'last_file_offset', offset: where + 56 });
    }
    const end = Math.max(file.length, Math.ceil(e.lastFileOffset / L.MiB) * L.MiB);
    for (const w of e.writes) {
      const length = w.data ? w.data.length : w.zeroLength!;
      if (w.fileOffset < L.HEADER_SECTION_BYTES || w.fileOffset + length > end || (w.fileOffset < logEnd && h.logOffset < w.fileOffset + length)) {
        throw new BlockError('ECORRUPT', `vhdx: log entry ${e.sequence}: a descriptor writes ${length} bytes at ${w.fileOffset}, outside the file's structures (1 MiB..${end}, not the log)`, { node: nodeName, field: 'file_offset', offset: where });
      }
    }
    if (end > file.length) await file.write(end - L.LOG_SECTOR_BYTES, new Uint8Array(L.LOG_SECTOR_BYTES), true);
    for (const w of e.writes) {
      if (w.data) await file.write(w.fileOffset, w.data);
      else if (w.zeroLength! > 0) await file.writeZeroes(w.fileOffset, w.zeroLength!);
    }
  }
  await file.flush();
}

/** QEMU's refusal of a read-only open that would need a replay (vhdx_parse_log: EPERM). */
export function replayRefusal(filename: string, nodeName: string): BlockError {
  return new BlockError('EACCES', `vhdx: VHDX image file '${filename}' opened read-only, but contains a log that needs to be replayed; to replay the log, run: qemu-img check -r all '${filename}'`, { node: nodeName, field: 'log_guid' });
}
