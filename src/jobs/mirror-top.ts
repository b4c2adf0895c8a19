// The filter a write-blocking mirror puts above its source (QEMU's mirror_top node): the
// source's users are moved onto it for the job's life, so their writes pass through the mirror
// (MirrorCopy.writeThrough) and reach the target before they complete. Reads, flushes and
// block status go straight to the source; a discard goes to the source only and leaves its
// granules dirty, for the background copy to settle.
import type { z } from 'zod';
import { BlockNode } from '../node/node.js';
import type { BlockStatus, DriverInstance, GenericBlockDriver } from '../node/types.js';
import type { MirrorCopy } from './mirror-copy.js';

/** The filter's driver: never opened from options, only made by a mirror job. */
const MIRROR_TOP_DRIVER: GenericBlockDriver<BlockNode> = {
  name: 'mirror_top',
  capabilities: { kind: 'filter' },
  // Never read: the node is made directly, not from options (and zod stays off the job's load path).
  schema: undefined as unknown as z.ZodType,
  open: () => Promise.reject(new Error('mirror_top nodes are made by mirror jobs only')),
};

class MirrorTopInstance implements DriverInstance {
  readonly alignment = 1;

  constructor(
    private readonly source: BlockNode,
    private readonly copy: MirrorCopy,
  ) {}

  length(): number {
    return this.source.length;
  }

  read(offset: number, buffer: Uint8Array): Promise<void> {
    return this.source.read(offset, buffer);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.copy.writeThrough('data', offset, data.length, data);
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.copy.writeThrough('zeroes', offset, length, null);
  }

  discard(offset: number, length: number): Promise<void> {
    return this.source.discard(offset, length);
  }

  flush(): Promise<void> {
    return this.source.flush();
  }

  blockStatus(offset: number, length: number): Promise<BlockStatus> {
    return this.source.blockStatus(offset, length);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A new mirror_top node named `name` over `source` (it takes a reference on it, dropped when the filter closes). */
export function mirrorTopNode(name: string, source: BlockNode, copy: MirrorCopy): BlockNode {
  source.ref();
  return new BlockNode(name, MIRROR_TOP_DRIVER, new MirrorTopInstance(source, copy), new Map([['file', source]]), false, { driver: 'mirror_top' });
}
