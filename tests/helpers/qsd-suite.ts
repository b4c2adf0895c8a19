// The set-up every "same QMP script against qemu-storage-daemon and us" test shares: a fresh
// temporary folder and BlockLayer per test, and the daemons it started stopped after it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import type { QmpDaemon } from './qmp-client.js';
import { haveProgram } from './tools.js';

/** Whether qemu-storage-daemon, qemu-img and qemu-io are all here. */
export const haveQsdTools = haveProgram('qemu-storage-daemon') && haveProgram('qemu-img') && haveProgram('qemu-io');

/** What a test of the suite works in; `dir` and `layer` are new for each test. */
export interface QsdSuite {
  readonly dir: string;
  readonly layer: BlockLayer;
  /** Daemons to stop after the test (push what you start; splice out what you stopped yourself). */
  readonly daemons: QmpDaemon[];
}

/** Registers the per-test set-up and tear-down in the calling file; folders are named `prefix…`. */
export function qsdSuite(prefix: string): QsdSuite {
  let dir = '';
  let layer: BlockLayer | undefined;
  const daemons: QmpDaemon[] = [];
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), prefix));
    layer = new BlockLayer();
  });
  afterEach(async () => {
    for (const d of daemons.splice(0)) await d.stop();
    await layer?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    get dir() {
      return dir;
    },
    get layer() {
      if (!layer) throw new Error('qsdSuite: layer used outside a test');
      return layer;
    },
    daemons,
  };
}
