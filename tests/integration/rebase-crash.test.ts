import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rebaseImage } from '../../src/index.js';
import { haveQemuTools, qemuImg, qemuIo, setQemuCwd } from '../helpers/qemu-images.js';

/**
 * A child process rebases a qcow2 image safely and is killed with SIGKILL at random moments while
 * it copies; after each kill the image must pass qemu-img check (leaks allowed) and read, through
 * whichever backing file its header names, exactly as before the rebase; a rebase run again then
 * completes over what the killed one left.
 */

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('rebase crash tests skipped: install qemu-utils (apt-get install qemu-utils) to run them');

const CHILD = path.join(import.meta.dirname, '../helpers/rebase-crash-child.ts');
const ROOT = path.join(import.meta.dirname, '../..');
const ROUNDS = 4;
let dir: string;
const p = (name: string) => path.join(dir, name);

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-rebase-crash-'));
  setQemuCwd(dir);
  if (!available) return;
  qemuImg('create', '-q', '-f', 'qcow2', 'base.qcow2', '64M');
  qemuIo('base.qcow2', ['write -P 1 0 32M']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2', '64M');
  qemuIo('mid.qcow2', ['write -P 2 4M 40M', 'write -z 50M 1M']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2', '64M');
  qemuIo('top.qcow2', ['write -P 3 8M 100k']);
  qemuImg('convert', '-O', 'raw', 'top.qcow2', 'view.raw');
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Runs the child on `image`, kills it `delay` ms after it starts copying; whether it finished first. */
function killedRebase(image: string, delay: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, image, 'base.qcow2'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.startsWith('go\n') && !out.includes('done')) setTimeout(() => child.kill('SIGKILL'), delay).unref();
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (signal === 'SIGKILL') resolve(false);
      else if (code === 0) resolve(true);
      else reject(new Error(`rebase child exited ${code}: ${err}`));
    });
  });
}

describe.skipIf(!available)('safe rebase killed at random moments', () => {
  it('leaves an image that qemu-img checks clean (leaks allowed) and that reads as before', async () => {
    const seed = Math.floor(Math.random() * 1000);
    let killed = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const image = p(`top-${round}.qcow2`);
      fs.copyFileSync(p('top.qcow2'), image);
      const delay = (seed * 7 + round * 97) % 250;
      const finished = await killedRebase(image, delay);
      if (!finished) killed++;
      const check = spawnSync('qemu-img', ['check', image], { cwd: dir, encoding: 'utf8' });
      expect([0, 3], `seed ${seed} round ${round}: ${check.stdout}`).toContain(check.status);
      const backing = JSON.parse(qemuImg('info', '--output=json', image))['backing-filename'];
      expect(['mid.qcow2', 'base.qcow2']).toContain(backing);
      expect(qemuImg('compare', image, 'view.raw'), `seed ${seed} round ${round}, delay ${delay} ms`).toContain('Images are identical.');
      // run again, it completes over what the killed one left
      await rebaseImage(image, 'base.qcow2', { backingFormat: 'qcow2' });
      expect(JSON.parse(qemuImg('info', '--output=json', image))['backing-filename']).toBe('base.qcow2');
      expect(qemuImg('compare', image, 'view.raw')).toContain('Images are identical.');
    }
    console.log(`rebase crash: ${killed} of ${ROUNDS} rebases killed while copying (seed ${seed})`);
  }, 180_000);
});
