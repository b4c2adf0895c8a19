// File-wide set-up of the tests that compare our drivers with qemu-img: one temporary folder
// (where qemu-img and qemu-io also run, so relative backing names resolve as QEMU resolves
// them) and one BlockLayer for the whole file, both gone after its last test.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { setQemuCwd } from './qemu-images.js';

export interface ImageSuite {
  /** The file's folder; valid from its first test on. */
  readonly dir: string;
  readonly layer: BlockLayer;
  /** A path in the file's folder. */
  p(name: string): string;
}

/** Registers the file's set-up and tear-down; the folder is named `prefix…`. */
export function imageSuite(prefix: string): ImageSuite {
  let dir = '';
  const layer = new BlockLayer();
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), prefix));
    setQemuCwd(dir);
  });
  afterAll(async () => {
    await layer.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    get dir() {
      return dir;
    },
    layer,
    p: (name) => join(dir, name),
  };
}
