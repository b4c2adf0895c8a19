// Per-test set-up many integration tests share: a fresh temporary folder and BlockLayer for
// each test, and what the test registered to undo (servers, processes) run after it, last first.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import { BlockLayer } from '../../src/index.js';

export interface LayerSuite {
  readonly dir: string;
  readonly layer: BlockLayer;
  /** Undo steps for the current test, run in reverse order before the layer closes. */
  readonly cleanups: (() => Promise<void>)[];
}

/** Registers the per-test set-up and tear-down in the calling file; folders are named `prefix…`. */
export function layerSuite(prefix: string): LayerSuite {
  let dir = '';
  let layer: BlockLayer | undefined;
  const cleanups: (() => Promise<void>)[] = [];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), prefix));
    layer = new BlockLayer();
  });
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
    await layer?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    get dir() {
      return dir;
    },
    get layer() {
      if (!layer) throw new Error('layerSuite: layer used outside a test');
      return layer;
    },
    cleanups,
  };
}
