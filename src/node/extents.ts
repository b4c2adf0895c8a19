import { BlockError } from '../errors.js';
import type { BlockStatus } from './types.js';

/** Anything that reports the status of the extent at an offset: a node or a drive. */
export interface StatusSource {
  /** Status of the extent starting at `offset` (may cover less than `length`, never 0 bytes). */
  blockStatus(offset: number, length: number): Promise<BlockStatus>;
}

/** Whether `next` continues `last` with the same status, so that `qemu-img map` shows them as one extent. */
export function continues(last: BlockStatus, next: BlockStatus): boolean {
  return (
    last.data === next.data &&
    last.zero === next.zero &&
    last.allocated === next.allocated &&
    last.depth === next.depth &&
    last.node === next.node &&
    last.hostNode === next.hostNode &&
    (last.hostOffset === undefined ? next.hostOffset === undefined : next.hostOffset === last.hostOffset + last.length)
  );
}

/**
 * The merged extents of [offset, offset+length) of `source`, in order, asking the source one
 * extent at a time as they are consumed (one extent ahead: an extent is complete only when the
 * next one differs). Stopping the iteration (`break`) stops asking. `signal` is looked at first
 * and after each call to the source and each yield: once it has aborted, the iteration fails with ECANCELED
 * (`cause`: the signal's reason) and yields nothing more. `node` names the source in that error.
 * The caller has checked the range; what it refused (`refusal`, when not null) is thrown by the first `next()`.
 */
export async function* mergedExtents(
  source: StatusSource,
  offset: number,
  length: number,
  signal: AbortSignal | undefined,
  node: string,
  refusal: unknown = null,
): AsyncGenerator<BlockStatus, void, undefined> {
  if (refusal !== null) throw refusal;
  const end = offset + length;
  let pos = offset;
  let pending: BlockStatus | null = null;
  if (signal?.aborted) throw aborted(node, pos, signal);
  while (pos < end) {
    const s = await source.blockStatus(pos, end - pos);
    if (signal?.aborted) throw aborted(node, pos, signal);
    pos += s.length;
    if (pending !== null && continues(pending, s)) {
      pending.length += s.length;
      continue;
    }
    if (pending !== null) {
      yield pending;
      if (signal?.aborted) throw aborted(node, pos, signal);
    }
    pending = s;
  }
  if (pending !== null) yield pending;
}

function aborted(node: string, offset: number, signal: AbortSignal): BlockError {
  return new BlockError('ECANCELED', `block-status: request at offset ${offset} was aborted`, { node, offset, cause: signal.reason });
}
