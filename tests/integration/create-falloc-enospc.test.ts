import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createImage } from '../../src/index.js';
import { CLI } from '../helpers/cli.js';

// A full disk needs a small file system: a 1 MiB tmpfs, which only root can mount.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-falloc-'));
let skipReason: string | null = null;
try {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'pipe' });
} catch (e) {
  skipReason = `mounting a 1 MiB tmpfs failed (${((e as { stderr?: Buffer }).stderr?.toString() || (e as Error).message).trim()})`;
  fs.rmdirSync(dir);
  console.log(`preallocation=falloc ENOSPC test skipped: ${skipReason}`);
}

describe.skipIf(skipReason !== null)('preallocation=falloc on a full file system is ENOSPC, not ENOTSUP (1 MiB tmpfs)', () => {
  afterAll(() => {
    execFileSync('umount', [dir]);
    fs.rmdirSync(dir);
  });

  it.each(['raw', 'qcow2'] as const)('createImage(-f %s, 1G, falloc) rejects ENOSPC and leaves nothing behind', async (format) => {
    const file = path.join(dir, `img.${format}`);
    await expect(createImage(file, { format, size: '1G', preallocation: 'falloc' })).rejects.toMatchObject({
      name: 'BlockError',
      code: 'ENOSPC',
      field: 'preallocation',
      message: expect.stringMatching(/no space left on device \(ENOSPC\)/),
    });
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('what fits is reserved: a 256 KiB raw image takes its blocks', async () => {
    const file = path.join(dir, 'small.raw');
    await createImage(file, { format: 'raw', size: '256k', preallocation: 'falloc' });
    expect(fs.statSync(file).blocks * 512).toBeGreaterThanOrEqual(256 * 1024);
    fs.rmSync(file);
  });

  it('blocklayer create -f qcow2 -o preallocation=falloc img 1G says ENOSPC in one line, exit 1', () => {
    const r = spawnSync(process.execPath, [...CLI, 'create', '-f', 'qcow2', '-o', 'preallocation=falloc', path.join(dir, 'cli.qcow2'), '1G'], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^blocklayer create: ENOSPC: preallocation: could not reserve space in .*no space left on device \(ENOSPC\)/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});
