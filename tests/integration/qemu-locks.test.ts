import { type ChildProcess, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { haveQemuLocks } from '../../src/drivers/file/qemu-lock.js';
import { BlockLayer } from '../../src/index.js';
import { startQemuDaemon, stopPid } from '../helpers/qemu-daemons.js';
import { serve } from '../helpers/serve-process.js';
import { haveProgram } from '../helpers/tools.js';
import { CLI } from '../helpers/cli.js';

/**
 * QEMU's image locks both ways, with real QEMU processes: what we hold, qemu-io, qemu-img,
 * qemu-nbd and qemu-storage-daemon see, and what they hold, we see; conflicting opens are
 * refused with QEMU's words and the refused side writes nothing.
 */
const available = haveProgram('qemu-img') && haveProgram('qemu-io') && haveProgram('qemu-nbd') && haveQemuLocks();
if (!available) console.log('QEMU lock interop tests skipped: they need Linux OFD locks and qemu-img, qemu-io, qemu-nbd (apt-get install qemu-utils)');

let dir: string;
const pids: number[] = [];
const children: ChildProcess[] = [];
const p = (name: string) => path.join(dir, name);
const sha = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

function qemuIo(...args: string[]) {
  const r = spawnSync('qemu-io', args, { encoding: 'utf8' });
  return { code: r.status, err: r.stderr + r.stdout };
}
function qemuImg(...args: string[]) {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function daemon(program: 'qemu-nbd' | 'qemu-storage-daemon', args: string[]): number {
  const pid = startQemuDaemon(program, args, dir);
  pids.push(pid);
  return pid;
}

function qemuNbd(image: string, ...extra: string[]): number {
  return daemon('qemu-nbd', [...extra, '-k', p(`nbd-${pids.length}.sock`), image]);
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qemu-locks-'));
});
afterEach(async () => {
  for (const pid of pids.splice(0)) await stopPid(pid);
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

const opens = (filename: string, readOnly: boolean) => ({ driver: 'qcow2', readOnly, file: { driver: 'file', filename } });

describe.skipIf(!available)('QEMU sees our locks', () => {
  it('a qcow2 drive open read-write: qemu-io can neither write nor read it, qemu-img info is refused, and nothing is written', async () => {
    const img = p('a.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
    const layer = new BlockLayer();
    await layer.openDrive(opens(img, false));
    try {
      const before = sha(img);
      const w = qemuIo('-f', 'qcow2', '-c', 'write -P 0x77 0 1M', img);
      expect(w.code).not.toBe(0);
      expect(w.err).toContain('Failed to get "write" lock');
      const r = qemuIo('-r', '-f', 'qcow2', '-c', 'read 0 4k', img);
      expect(r.code).not.toBe(0);
      expect(r.err).toContain('Failed to get shared "write" lock');
      const info = qemuImg('info', img);
      expect(info.code).not.toBe(0);
      expect(info.err).toContain('Failed to get shared "write" lock');
      expect(sha(img)).toBe(before);
    } finally {
      await layer.close();
    }
    expect(qemuImg('check', img).code).toBe(0);
  });

  it('a qcow2 drive open read-only: qemu-img info and qemu-io -r coexist, a qemu-io writer is refused', async () => {
    const img = p('a.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
    const layer = new BlockLayer();
    await layer.openDrive(opens(img, true));
    try {
      expect(qemuImg('info', img).code).toBe(0);
      expect(qemuIo('-r', '-f', 'qcow2', '-c', 'read 0 4k', img).code).toBe(0);
      const w = qemuIo('-f', 'qcow2', '-c', 'write -P 0x77 0 1M', img);
      expect(w.code).not.toBe(0);
      expect(w.err).toContain('Failed to get "write" lock');
    } finally {
      await layer.close();
    }
  });

  it('a raw drive open read-write: qemu-io cannot write it, qemu-img info may look (we do not resize raw images)', async () => {
    const img = p('r.raw');
    fs.writeFileSync(img, Buffer.alloc(1 << 20, 0x11));
    const layer = new BlockLayer();
    await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: img } });
    try {
      const w = qemuIo('-f', 'raw', '-c', 'write -P 0x77 0 4k', img);
      expect(w.code).not.toBe(0);
      expect(w.err).toContain('Failed to get "write" lock');
      expect(qemuImg('info', '-f', 'raw', img).code).toBe(0);
      expect(fs.readFileSync(img).every((b) => b === 0x11)).toBe(true);
    } finally {
      await layer.close();
    }
  });

  it('blocklayer serve holding a qcow2: qemu-io write is refused; after serve stops the image is clean and holds none of it', async () => {
    const img = p('lk.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
    const s = await serve(img, '-x', 'lk', '-k', p('serve.sock'));
    children.push(s.child);
    const w = qemuIo('-f', 'qcow2', '-c', 'write -P 0x77 0 1M', img);
    expect(w.code).not.toBe(0);
    expect(w.err).toContain('Failed to get "write" lock');
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    expect(qemuImg('check', img).code).toBe(0);
    expect(qemuIo('-f', 'qcow2', '-c', 'read -P 0 0 1M', img).err).not.toContain('Pattern verification failed');
  });
});

describe.skipIf(!available)('we see QEMU locks', () => {
  it('qemu-nbd serving a qcow2 read-write: our read-write open and our read-only open are refused, naming qemu-nbd', async () => {
    const img = p('a.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
    const pid = qemuNbd(img, '-f', 'qcow2');
    const layer = new BlockLayer();
    await expect(layer.openDrive(opens(img, false))).rejects.toMatchObject({
      code: 'ELOCKED',
      message: expect.stringMatching(new RegExp(`failed to get "write" lock on '${img}'.*qemu-nbd, pid ${pid}`)),
    });
    await expect(layer.openDrive(opens(img, true))).rejects.toMatchObject({
      code: 'ELOCKED',
      message: expect.stringContaining('failed to get shared "write" lock'),
    });
    await layer.close();
  });

  it('qemu-nbd serving read-only: our read-only open coexists, our read-write open is refused', async () => {
    const img = p('a.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
    qemuNbd(img, '-r', '-f', 'qcow2');
    const layer = new BlockLayer();
    const d = await layer.openDrive(opens(img, true));
    expect(d.length).toBe(16 << 20);
    await expect(layer.openDrive(opens(img, false))).rejects.toMatchObject({ code: 'ELOCKED', message: expect.stringContaining('failed to get "write" lock') });
    await layer.close();
  });

  it.skipIf(!haveProgram('qemu-storage-daemon'))('qemu-storage-daemon holding a qcow2 node: our open is refused', async () => {
    const img = p('a.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
    daemon('qemu-storage-daemon', ['--blockdev', `driver=file,node-name=f0,filename=${img}`, '--blockdev', 'driver=qcow2,node-name=q0,file=f0']);
    const layer = new BlockLayer();
    await expect(layer.openDrive(opens(img, false))).rejects.toMatchObject({ code: 'ELOCKED', message: expect.stringContaining('qemu-storage-d') });
    await layer.close();
  });

  it('blocklayer commit into a base qemu-nbd serves is refused with a write-lock message; the base is untouched', async () => {
    const base = p('base.qcow2');
    const ov = p('ov.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, '16M');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', ov);
    expect(qemuIo('-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', ov).code).toBe(0);
    qemuNbd(base, '-f', 'qcow2');
    const before = sha(base);
    const r = cli('commit', ov);
    expect(r.code).toBe(1);
    expect(r.err).toContain('ELOCKED');
    expect(r.err).toContain('"write" lock');
    expect(r.err).not.toContain('shared');
    expect(sha(base)).toBe(before);
  });

  it('blocklayer check without -r on an image qemu-nbd writes is refused, as qemu-img check is', async () => {
    const img = p('a.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
    qemuNbd(img, '-f', 'qcow2');
    expect(qemuImg('check', img).err).toContain('Failed to get shared "write" lock');
    const r = cli('check', img);
    expect(r.code).not.toBe(0);
    expect(r.err).toContain('failed to get shared "write" lock');
  });
});

describe.skipIf(!available)('create and convert never replace an image QEMU has open', () => {
  for (const verb of ['create', 'convert'] as const) {
    it(`${verb} onto a qcow2 qemu-nbd serves fails with ELOCKED; the served file (same inode, same bytes) stays`, async () => {
      const img = p('v.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
      const src = p('a.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', src, '16M');
      qemuNbd(img, '-f', 'qcow2');
      const before = { sha: sha(img), ino: fs.statSync(img).ino };
      const r = verb === 'create' ? cli('create', '-f', 'qcow2', img, '64M') : cli('convert', '-O', 'qcow2', src, img);
      expect(r.code).toBe(1);
      expect(r.err).toContain('ELOCKED');
      expect(r.err).toContain(`failed to get "write" lock on '${img}'`);
      expect(r.err).toContain('qemu-nbd');
      expect({ sha: sha(img), ino: fs.statSync(img).ino }).toEqual(before);
      expect(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    });
  }

  it('a read-only qemu-nbd user of the target refuses the replacement too', async () => {
    const img = p('v.raw');
    fs.writeFileSync(img, Buffer.alloc(1 << 20));
    qemuNbd(img, '-r', '-f', 'raw');
    const r = cli('create', '-f', 'raw', img, '2M');
    expect(r.code).toBe(1);
    expect(r.err).toContain('ELOCKED');
    expect(fs.statSync(img).size).toBe(1 << 20);
  });
});

describe('a replaced output keeps its owner, group and mode', () => {
  it.skipIf(process.getuid?.() !== 0)('create over a 0600 file owned by nobody: the new image is 0600 and owned by nobody', () => {
    const img = p('owned.qcow2');
    fs.writeFileSync(img, 'old');
    fs.chownSync(img, 65534, 65534);
    fs.chmodSync(img, 0o600);
    const r = cli('create', '-f', 'qcow2', img, '16M');
    expect(r.code, r.err).toBe(0);
    const st = fs.statSync(img);
    expect({ uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 }).toEqual({ uid: 65534, gid: 65534, mode: 0o600 });
    expect(fs.readFileSync(img).subarray(0, 4).toString('latin1')).toBe('QFI\xfb');
  });

  it('convert over a 0666 file: the mode carries over, not masked by the umask', () => {
    const src = p('in.raw');
    fs.writeFileSync(src, Buffer.alloc(64 * 1024, 1));
    const out = p('out.raw');
    fs.writeFileSync(out, 'old');
    fs.chmodSync(out, 0o666);
    const r = cli('convert', src, out, '-q');
    expect(r.code, r.err).toBe(0);
    expect(fs.statSync(out).mode & 0o7777).toBe(0o666);
    expect(fs.readFileSync(out).equals(fs.readFileSync(src))).toBe(true);
  });
});
