import * as z from 'zod';
import { builtOnce } from '../node/lazy-driver.js';
import { BlockError } from '../errors.js';
import { type BlockStatus, defineDriver } from '../node/driver.js';
import { sizeSchema } from '../options/size.js';

const CHUNK = 64 * 1024;

// built when first asked for: a schema costs every start, and most runs open no such node
const schema = builtOnce(() =>
  z
    .object({
      /** Virtual size in bytes (or '64M'). */
      size: sizeSchema(),
      /** Request alignment to emulate (power of two), e.g. 512 or 4096 for a sector-based disk. */
      alignment: z.number().int().positive().default(1),
      /** Largest transfer per driver call (0: none), to exercise request splitting. */
      maxTransfer: z.number().int().nonnegative().default(0),
    })
    .strict(),
);

/** A sparse in-memory disk: 64 KiB chunks allocated on first write. The fake for tests. */
export const memoryDriver = defineDriver({
  name: 'memory',
  capabilities: { kind: 'protocol' },
  get schema() {
    return schema();
  },
  async open({ options, nodeName }) {
    const { alignment, maxTransfer } = options;
    let size = options.size;
    if (alignment & (alignment - 1)) {
      throw new BlockError('EINVAL', `alignment: ${alignment} is not a power of two`, { field: 'alignment', node: nodeName });
    }
    const chunks = new Map<number, Uint8Array>();
    const chunkFor = (index: number) => {
      let c = chunks.get(index);
      if (!c) {
        c = new Uint8Array(CHUNK);
        chunks.set(index, c);
      }
      return c;
    };
    // Visit each chunk a range touches: (chunk index, offset in chunk, offset in range, length).
    const each = (offset: number, length: number, fn: (i: number, at: number, pos: number, n: number) => void) => {
      let pos = 0;
      while (pos < length) {
        const abs = offset + pos;
        const i = Math.floor(abs / CHUNK);
        const at = abs - i * CHUNK;
        const n = Math.min(CHUNK - at, length - pos);
        fn(i, at, pos, n);
        pos += n;
      }
    };
    const zero = (offset: number, length: number) =>
      each(offset, length, (i, at, _pos, n) => {
        if (n === CHUNK) chunks.delete(i);
        else chunks.get(i)?.fill(0, at, at + n);
      });
    return {
      alignment,
      maxTransfer,
      // Like a file, it grows when a format driver allocates past its end (qcow2 in a memory overlay).
      growable: true,
      length: () => size,
      async read(offset, buffer) {
        each(offset, buffer.length, (i, at, pos, n) => {
          const c = chunks.get(i);
          if (c) buffer.set(c.subarray(at, at + n), pos);
          else buffer.fill(0, pos, pos + n);
        });
      },
      async write(offset, data) {
        each(offset, data.length, (i, at, pos, n) => chunkFor(i).set(data.subarray(pos, pos + n), at));
        if (offset + data.length > size) size = offset + data.length;
      },
      async flush() {},
      async discard(offset, length) {
        zero(offset, length);
      },
      async writeZeroes(offset, length) {
        zero(offset, length);
      },
      async blockStatus(offset, length): Promise<BlockStatus> {
        const allocated = chunks.has(Math.floor(offset / CHUNK));
        let end = offset;
        while (end < offset + length && chunks.has(Math.floor(end / CHUNK)) === allocated) {
          end = Math.min(offset + length, (Math.floor(end / CHUNK) + 1) * CHUNK);
        }
        return { offset, length: end - offset, data: allocated, zero: !allocated, allocated, depth: 0 };
      },
      async truncate(newSize) {
        // What lies beyond the new end is dropped, so that growing again reads zeros there.
        if (newSize < size) {
          for (const i of chunks.keys()) if (i * CHUNK >= newSize) chunks.delete(i);
          zero(newSize, Math.min(size, Math.ceil(newSize / CHUNK) * CHUNK) - newSize);
        }
        size = newSize;
      },
      // Nothing depends on the mode (the node refuses writes while read-only).
      async reopen() {
        return undefined;
      },
      async close() {
        chunks.clear();
      },
      info: () => ({ allocatedBytes: chunks.size * CHUNK }),
    };
  },
});
