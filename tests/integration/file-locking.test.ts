import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';

const CHILD = path.join(import.meta.dirname, '../helpers/open-file-child.ts');
let dir: string;
let file: string;
const children: ChildProcess[] = [];

/** Starts a second process that opens `file` and reports the outcome. */
function openInChild(mode: 'rw' | 'ro', locking = 'auto'): Promise<{ ok: boolean; code?: string; message?: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, file, mode, locking], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve({ ...JSON.parse(out.slice(0, nl)), child });
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      if (!out.includes('\n')) reject(new Error(`child exited with ${code} before reporting`));
    });
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.on('exit', () => resolve());
    child.stdin!.end();
  });
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-lock-'));
  file = path.join(dir, 'disk.img');
  fs.writeFileSync(file, Buffer.alloc(1 << 20));
});
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null) await stopChild(c);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('file locking across processes', () => {
  it('a second process opening the image read-write gets ELOCKED naming the file', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'file', filename: file });
    const r = await openInChild('rw');
    expect(r.ok).toBe(false);
    expect(r.code).toBe('ELOCKED');
    expect(r.message).toContain(file);
    await d.close();
  });

  it('two read-only opens in two processes coexist', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'file', filename: file, readOnly: true });
    const r = await openInChild('ro');
    expect(r).toMatchObject({ ok: true });
    await d.close();
  });

  it('a read-only user in another process blocks a read-write open, and closing releases the lock', async () => {
    const r = await openInChild('ro');
    expect(r.ok).toBe(true);
    const layer = new BlockLayer();
    await expect(layer.openDrive({ driver: 'file', filename: file })).rejects.toMatchObject({ code: 'ELOCKED' });
    await stopChild(r.child);
    const d = await layer.openDrive({ driver: 'file', filename: file });
    await d.close();
  });

  it("locking: 'off' bypasses the lock", async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'file', filename: file });
    const r = await openInChild('rw', 'off');
    expect(r).toMatchObject({ ok: true });
    await d.close();
  });

  it('a read-write open in the same process conflicts too (locks belong to the open file)', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'file', filename: file });
    await expect(layer.openDrive({ driver: 'file', filename: file, readOnly: true })).rejects.toMatchObject({ code: 'ELOCKED' });
    await d.close();
  });
});
