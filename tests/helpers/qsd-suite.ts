// The set-up every "same QMP script against qemu-storage-daemon and us" test shares: a fresh
// temporary folder and BlockLayer per test, and the daemons it started stopped after it.
import { afterEach, beforeEach } from 'vitest';
import { type BlockLayer, NbdServer } from '../../src/index.js';
import { layerSuite } from './layer-suite.js';
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
  /** With `{ nbd: true }`: an NbdServer per test, closed after the daemons, before the layer. */
  readonly nbd: NbdServer;
}

/** Registers the per-test set-up and tear-down in the calling file; folders are named `prefix…`. */
export function qsdSuite(prefix: string, opts: { nbd?: boolean } = {}): QsdSuite {
  const base = layerSuite(prefix);
  const daemons: QmpDaemon[] = [];
  let nbd: NbdServer | undefined;
  if (opts.nbd) {
    beforeEach(() => {
      nbd = new NbdServer();
    });
    afterEach(async () => {
      await nbd?.close();
    });
  }
  // registered after the layer's tear-down, so it runs before it (vitest runs after-hooks as a stack)
  afterEach(async () => {
    for (const d of daemons.splice(0)) await d.stop();
  });
  return {
    get dir() {
      return base.dir;
    },
    get layer() {
      return base.layer;
    },
    daemons,
    get nbd() {
      if (!nbd) throw new Error('qsdSuite: nbd used outside a test, or without { nbd: true }');
      return nbd;
    },
  };
}
