import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, checkImage, createImage } from '../../src/index.js';
import { testFilterDriver } from '../helpers/test-filter-driver.js';

/**
 * A cluster freed by a discard must not be handed to another guest cluster while a read of it is
 * still in flight: the read would return the other cluster's new data (and a write racing the
 * same way would land in it). The `gate` filter holds reads of one host range until released,
 * which makes the race deterministic.
 */

const CLUSTER = 65536;

interface Gate {
  /** Host offset whose next read is held. */
  armAt: number;
  held?: () => void;
  heldSeen?: () => void;
}
const gate: Gate = { armAt: -1 };

const gateDriver = testFilterDriver('test-gate', (file) => ({
  read: async (offset, buffer) => {
    if (gate.armAt >= 0 && offset <= gate.armAt && gate.armAt < offset + buffer.length) {
      gate.armAt = -1;
      await new Promise<void>((resolve) => {
        gate.held = resolve;
        gate.heldSeen?.();
      });
    }
    await file.read(offset, buffer);
  },
}));

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qcow2-reuse-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('qcow2: a cluster under an in-flight read is not reused', () => {
  it('a read that started before a discard never returns the data of the cluster that reused its host cluster', async () => {
    const file = path.join(dir, 'reuse.qcow2');
    await createImage(file, { format: 'qcow2', size: 16 * CLUSTER, clusterSize: CLUSTER });
    const layer = new BlockLayer();
    layer.registerDriver(gateDriver);
    try {
      const drive = await layer.openDrive({ driver: 'qcow2', file: { driver: 'test-gate', file: { driver: 'file', filename: file } } });
      await drive.write(0, new Uint8Array(CLUSTER).fill(0xaa));
      await drive.flush();
      const status = await drive.blockStatus(0, CLUSTER);
      expect(status.hostOffset).toBeGreaterThan(0);
      const oldHost = status.hostOffset!;

      gate.armAt = oldHost;
      const seen = new Promise<void>((resolve) => {
        gate.heldSeen = resolve;
      });
      const reading = drive.read(0, 4096);
      await seen; // the read has its mapping (host cluster oldHost) and waits in the gate

      await drive.discard(0, CLUSTER);
      await drive.flush(); // the discard's release is applied here (once the L2 table is on disk)
      await drive.write(CLUSTER, new Uint8Array(CLUSTER).fill(0xbb));
      await drive.flush();
      const newHost = (await drive.blockStatus(CLUSTER, CLUSTER)).hostOffset!;
      expect(newHost).not.toBe(oldHost);

      gate.held!();
      const got = await reading;
      expect(got.includes(0xbb)).toBe(false);
      expect(got.every((b) => b === 0xaa)).toBe(true);

      // Once the read is done the cluster is released at the next flush: no leak.
      await drive.flush();
      await drive.close();
      const check = await checkImage(file);
      expect({ leaks: check.leaks, corruptions: check.corruptions }).toEqual({ leaks: 0, corruptions: 0 });

      // and it is free for reuse again
      const again = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: file } });
      await again.write(2 * CLUSTER, new Uint8Array(CLUSTER).fill(0xcc));
      await again.flush();
      expect((await again.blockStatus(2 * CLUSTER, CLUSTER)).hostOffset).toBe(oldHost);
      await again.close();
    } finally {
      gate.held?.(); // a failed assertion must not leave the read (and close) waiting
      await layer.close();
    }
  });
});
