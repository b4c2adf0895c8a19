import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as z from 'zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, defineDriver, vmdkDriver } from '../../src/index.js';

type Op = { kind: 'write'; offset: number; length: number } | { kind: 'flush' };
const log: Op[] = [];

/** A filter that records the writes and flushes reaching the image file, in order. */
const recorder = defineDriver({
  name: 'recorder',
  capabilities: { kind: 'filter' },
  schema: z.object({}).strict(),
  children: { file: 'required' },
  async open({ children }) {
    const f = children.get('file')!;
    return {
      alignment: 1,
      growable: true,
      length: () => f.length,
      read: (o, b) => f.read(o, b),
      write: async (o, d) => {
        log.push({ kind: 'write', offset: o, length: d.length });
        await f.write(o, d, true);
      },
      flush: async () => {
        log.push({ kind: 'flush' });
        await f.flush();
      },
      discard: (o, l) => f.discard(o, l),
      blockStatus: (o, l) => f.blockStatus(o, l),
      close: async () => {},
    };
  },
});

let dir: string;
const layer = new BlockLayer();
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-vmdk-order-'));
  layer.registerDriver(recorder);
});
afterAll(async () => {
  await layer.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('vmdk write ordering (crash safety)', () => {
  for (const variant of ['preallocated grain tables', 'grain tables made on demand']) {
    it(`${variant}: no grain table or directory entry is written while data it may point at is unflushed`, async () => {
      const file = path.join(dir, `${variant.replace(/\W/g, '')}.vmdk`);
      fs.writeFileSync(file, '');
      const node = await layer.openNode({ driver: 'file', filename: file });
      await vmdkDriver.create!.create(node, 96 * 1024 * 1024, {});
      await node.unref();
      const b = fs.readFileSync(file);
      const metadataEnd = b.length; // header, descriptor, directories, preallocated tables
      if (variant === 'grain tables made on demand') {
        for (const field of [48, 56]) b.fill(0, Number(b.readBigUInt64LE(field)) * 512, Number(b.readBigUInt64LE(field)) * 512 + 12);
        fs.writeFileSync(file, b);
      }
      const d = await layer.openDrive({ driver: 'vmdk', file: { driver: 'recorder', file: { driver: 'file', filename: file } } } as never);
      log.length = 0;
      const writes = [
        [0, 100_000],
        [40 * 1024 * 1024 + 5, 70_000],
        [33 * 1024 * 1024 - 100, 300],
        [65536, 65536],
        [90 * 1024 * 1024, 3 * 1024 * 1024],
      ];
      await Promise.all(writes.map(([o, n]) => d.write(o, new Uint8Array(n).fill(7))));
      await d.close();
      let unflushed = 0;
      let metadataWrites = 0;
      for (const op of log) {
        if (op.kind === 'flush') unflushed = 0;
        else if (op.offset >= metadataEnd) unflushed++;
        else if (op.offset >= 512 * 21) {
          // A grain table or directory entry (the descriptor's new CID at 512..10752 points at nothing).
          metadataWrites++;
          expect(unflushed, `metadata write at ${op.offset} after unflushed data`).toBe(0);
        }
      }
      expect(metadataWrites).toBeGreaterThan(0);
    });
  }
});
