// A job that ends lets go of its nodes before its waiters wake: a layer closed right after
// job.wait() has closed every image, so the base opens read-write again at once (its lock is free),
// in this process and in qemu-io.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, createImage } from '../../src/index.js';
import type { Drive } from '../../src/index.js';
import type { JobSpec } from '../../src/jobs/start.js';
import { haveProgram } from '../helpers/tools.js';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-job-release-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** base ← mid ← top, qcow2 files; a drive on top with data written into it. */
async function chain(name: string) {
  const base = path.join(dir, `${name}-base.qcow2`);
  const mid = path.join(dir, `${name}-mid.qcow2`);
  const top = path.join(dir, `${name}-top.qcow2`);
  await createImage(base, { format: 'qcow2', size: 4 * 1024 * 1024 });
  await createImage(mid, { format: 'qcow2', size: 4 * 1024 * 1024, backing: base, backingFormat: 'qcow2' });
  await createImage(top, { format: 'qcow2', size: 4 * 1024 * 1024, backing: mid, backingFormat: 'qcow2' });
  const layer = new BlockLayer();
  const drive = await layer.openDrive({ id: 'd0', driver: 'qcow2', file: { driver: 'file', filename: top } });
  await drive.write(0, new Uint8Array(65536).fill(7));
  return { layer, drive, base, mid, top };
}

/** The node under `drive`'s root, `hops` backing links down. */
const below = (drive: Drive, hops: number) => {
  let node = drive.node;
  for (let i = 0; i < hops; i++) node = node.children.get('backing')!;
  return node.name;
};

const cases: [string, (drive: Drive) => JobSpec, 'base' | 'mid'][] = [
  ['active commit (READY, then complete)', () => ({ type: 'commit', device: 'd0' }), 'base'],
  ['intermediate commit of mid into base', (d) => ({ type: 'commit', device: 'd0', topNode: below(d, 1), baseNode: below(d, 2) }), 'base'],
  ['stream into top', () => ({ type: 'stream', device: 'd0' }), 'mid'],
];

describe('jobs let go of their images before job.wait() resolves', () => {
  for (const [what, spec, reopen] of cases) {
    it(`${what}: after wait() and layer.close(), the ${reopen} image opens read-write at once`, async () => {
      const c = await chain(`c${cases.findIndex((k) => k[0] === what)}`);
      const job = await c.layer.startJob(spec(c.drive));
      job.once('ready', () => job.complete());
      await job.wait();
      expect(job.status === 'null' || job.status === 'concluded').toBe(true);
      await c.layer.close();
      const again = new BlockLayer();
      try {
        const file = reopen === 'base' ? c.base : c.mid;
        const d = await again.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: file } });
        expect(d.readOnly).toBe(false);
        await d.close();
      } finally {
        await again.close();
      }
      if (haveProgram('qemu-io')) {
        // another process: QEMU's own lock check agrees that nothing holds the images
        const r = spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'read 0 512', reopen === 'base' ? c.base : c.mid], { encoding: 'utf8' });
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
      }
    });
  }
});
