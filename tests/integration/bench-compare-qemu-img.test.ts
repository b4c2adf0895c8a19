import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveProgram } from '../helpers/tools.js';
import { CLI } from '../helpers/cli.js';

const available = haveProgram('qemu-img');
if (!available && process.env.CI === 'true') throw new Error('qemu-img missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('bench --compare qemu-img skipped: install qemu-utils (apt-get install qemu-utils) to run it');

let dir: string;
let image: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-bench-compare-'));
  image = path.join(dir, 'disk.raw');
  fs.writeFileSync(image, Buffer.alloc(4 << 20, 7));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe.skipIf(!available)('blocklayer bench --compare qemu-img', () => {
  for (const aio of ['threads', 'io_uring'] as const) {
    it(`runs qemu-img bench with our engine (${aio}), the page cache and our request count`, () => {
      const r = spawnSync(
        process.execPath,
        [...CLI, 'bench', '--drive', `file=${image},format=raw,aio=${aio}`, '--rw', 'read', '--bs', '4k', '--iodepth', '8', '--size', '1M', '--compare', 'qemu-img', '--json'],
        { encoding: 'utf8' },
      );
      expect(r.stderr.replace(/.*BLOCKLAYER_AIO_FALLBACK.*\n?/g, '').replace(/.*Use `node --trace-warnings.*\n?/g, '')).toBe('');
      expect(r.status).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out.total.ops).toBe(256);
      const args: string[] = out.compare.args;
      // Where io_uring falls back to threads, qemu-img runs threads too.
      expect(['threads', aio]).toContain(args[args.indexOf('-i') + 1]);
      expect(args[args.indexOf('-t') + 1]).toBe('writeback');
      expect(args[args.indexOf('-c') + 1]).toBe('256');
      expect(out.compare.iops).toBeGreaterThan(0);
    });
  }
});
