import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, vmdkDriver } from '../../src/index.js';
import { recordingFilter } from '../helpers/recording-filter.js';

const { driver: recorder, log } = recordingFilter('recorder');

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
