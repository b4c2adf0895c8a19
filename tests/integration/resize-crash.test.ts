import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveQemuTools } from '../helpers/qemu-images.js';

const CHILD = path.join(import.meta.dirname, '../helpers/resize-crash-child.ts');
let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-resize-crash-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Runs the child until it has printed `{"ready":true}` and then `cycles` cycles more, plus `extraMs`; then SIGKILL. */
function runAndKill(image: string, cycles: number, extraMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, image], { stdio: ['pipe', 'pipe', 'inherit'] });
    let seen = -1;
    let buf = '';
    let killing = false;
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const m = JSON.parse(buf.slice(0, nl)) as { ready?: boolean; cycle?: number };
        buf = buf.slice(nl + 1);
        if (m.cycle !== undefined) seen = m.cycle;
        if (!killing && seen + 1 >= cycles) {
          killing = true;
          setTimeout(() => child.kill('SIGKILL'), extraMs);
        }
      }
    });
    child.on('error', reject);
    child.on('close', () => resolve(seen + 1));
  });
}

describe.skipIf(!haveQemuTools())('qcow2 resize killed at any point', () => {
  it('leaves an image without corruption (leaks at most) however the process dies mid-grow or mid-shrink', { timeout: 300_000 }, async () => {
    const image = path.join(dir, 'crash.qcow2');
    spawnSync('qemu-img', ['create', '-f', 'qcow2', '-o', 'cluster_size=4096', image, '1M']);
    let done = 0;
    for (const [cycles, extraMs] of [[1, 0], [2, 7], [1, 23], [3, 41]] as const) {
      done += await runAndKill(image, cycles, extraMs);
      const r = spawnSync('qemu-img', ['check', '--output=json', image], { encoding: 'utf8' });
      const j = JSON.parse(r.stdout) as Record<string, number>;
      expect(j.corruptions ?? 0).toBe(0);
      expect(j['check-errors'] ?? 0).toBe(0);
      const info = JSON.parse(spawnSync('qemu-img', ['info', '--output=json', image], { encoding: 'utf8' }).stdout) as { 'virtual-size': number };
      expect(info['virtual-size'] === 2 ** 20 || info['virtual-size'] % 2 ** 30 === 0).toBe(true);
      // Leaks are what a crash may leave (as with QEMU); repaired, the next round starts clean.
      spawnSync('qemu-img', ['check', '-r', 'leaks', image]);
    }
    expect(done).toBeGreaterThanOrEqual(7);
  });
});
