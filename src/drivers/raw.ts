import * as z from 'zod';
import { builtOnce } from '../node/lazy-driver.js';
import { BlockError } from '../errors.js';
import { defineDriver } from '../node/driver.js';
import { sizeSchema } from '../options/size.js';

// built when first asked for: a schema costs every start, and most runs open no such node
const schema = builtOnce(() =>
  z
    .object({
      /** Start of the window into the child, in bytes (QEMU raw `offset`). */
      offset: sizeSchema().default(0),
      /** Size of the window (QEMU raw `size`); default: up to the child's end. */
      size: sizeSchema().optional(),
    })
    .strict(),
);

/** The raw format: the child's bytes as they are, optionally a window of them. */
export const rawDriver = defineDriver({
  name: 'raw',
  capabilities: { kind: 'format' },
  get schema() {
    return schema();
  },
  // Any bytes are raw: the fallback when no other format knows them (QEMU raw_probe).
  probe: () => 1,
  children: { file: 'required' },
  async open({ options, children, nodeName }) {
    const file = children.get('file')!;
    const base = options.offset;
    const childSize = file.length;
    if (base > childSize) {
      throw new BlockError('EINVAL', `offset: ${base} is beyond the end of the file (${childSize} bytes)`, {
        field: 'offset',
        node: nodeName,
      });
    }
    let size = options.size ?? childSize - base;
    if (base + size > childSize) {
      throw new BlockError('EINVAL', `size: offset ${base} + size ${size} is beyond the end of the file (${childSize} bytes)`, {
        field: 'size',
        node: nodeName,
      });
    }
    return {
      alignment: file.alignment,
      length: () => size,
      read: (offset, buffer) => file.read(base + offset, buffer),
      write: (offset, data) => file.write(base + offset, data),
      flush: () => file.flush(),
      discard: (offset, length) => file.discard(base + offset, length),
      writeZeroes: (offset, length) => file.writeZeroes(base + offset, length),
      async blockStatus(offset, length) {
        const s = await file.blockStatus(base + offset, length);
        return { ...s, offset, depth: 0, node: nodeName, hostOffset: base + offset, hostNode: file.name };
      },
      async truncate(newSize, how) {
        // A window of fixed size stays as it is (QEMU raw: "Cannot resize fixed-size raw disks").
        if (options.size !== undefined) throw new BlockError('ENOTSUP', 'Cannot resize fixed-size raw disks', { field: 'size', node: nodeName });
        await file.truncate(base + newSize, how);
        size = file.length - base;
      },
      // Nothing here depends on the mode: the file below reopens itself.
      async reopen() {
        return undefined;
      },
      async close() {},
    };
  },
});
