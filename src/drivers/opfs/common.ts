// What both access modes of the opfs driver answer alike.
import { BlockError } from '../../errors.js';
import type { BlockStatus } from '../../node/driver.js';
import type { PreallocMode } from '../../node/types.js';

/** What both access modes share: the context of errors, the info, the release at close. */
export interface OpfsFileFacts {
  readonly path: string;
  readonly node: string;
  readonly writable: boolean;
  readonly info: Record<string, unknown>;
  /** Gives up the Web Lock; resolves once the lock manager has let it go (another open may take it then). */
  readonly release: () => Promise<void>;
}

/** OPFS has no SEEK_DATA: everything is data, as the file driver answers without it. */
export function allData(offset: number, length: number): Promise<BlockStatus> {
  return Promise.resolve({ offset, length, data: true, zero: false, allocated: true, depth: 0, hostOffset: offset });
}

/** The preallocation a resize asks for, if OPFS can honour it (it cannot reserve space without writing it). */
export function preallocMode(prealloc: PreallocMode | undefined, node: string, path: string): 'off' | 'full' {
  const mode = prealloc ?? 'off';
  if (mode === 'off' || mode === 'full') return mode;
  throw new BlockError('ENOTSUP', `Unsupported preallocation mode on opfs: ${mode} (use off or full)`, { node, path, field: 'prealloc' });
}
