import { execFileSync, spawnSync } from 'node:child_process';
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
 * -U/--force-share (qemu-img's): info, map, convert and check read an image another process holds
 * read-write (qemu-nbd, our own serve), its backing chain and data file too, as qemu-img -U does.
 */
const available = haveProgram('qemu-img') && haveProgram('qemu-io') && haveProgram('qemu-nbd') && haveQemuLocks();
if (!available) console.log('-U/--force-share tests skipped: they need Linux OFD locks and qemu-img, qemu-io, qemu-nbd (apt-get install qemu-utils)');

let dir = '';
const pids: number[] = [];
const p = (name: string) => path.join(dir, name);
const sha = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/** Image names in the test directory, as both tools are given them (the CLI runs where tsx resolves). */
const inDir = (args: string[]) => args.map((a) => (/^[\w-]+\.(qcow2|raw)$/.test(a) ? p(a) : a));
function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [...CLI, ...inDir(args)], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
function qemuImg(...args: string[]) {
  const r = spawnSync('qemu-img', inDir(args), { encoding: 'utf8', cwd: dir });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** qemu-nbd holding `image` read-write (it forks once the image is open and locked). */
function qemuNbd(format: string, image: string): void {
  pids.push(startQemuDaemon('qemu-nbd', ['-k', p(`nbd-${pids.length}.sock`), '-f', format, image], dir, dir));
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-force-share-'));
  // The images need qemu-img; the driver option's own test does not.
  if (!available) return;
  // base <- img, with data in both layers
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '4M'], { cwd: dir });
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 1M', 'base.qcow2'], { cwd: dir, stdio: 'ignore' });
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'img.qcow2'], { cwd: dir });
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 2 512k 1M', 'img.qcow2'], { cwd: dir, stdio: 'ignore' });
});
afterEach(async () => {
  for (const pid of pids.splice(0)) await stopPid(pid);
  fs.rmSync(dir, { recursive: true, force: true });
});

const LOCKED = /^blocklayer (info|map|convert|check): ELOCKED: failed to get shared "write" lock on '[^']*': is another process using the image\?.*\n$/;

describe.skipIf(!available)('-U/--force-share', () => {
  it('qemu-nbd holds the image read-write: info, map, convert and check fail with ELOCKED; with -U (or --force-share) they read it as qemu-img -U does', async () => {
    qemuNbd('qcow2', 'img.qcow2');
    expect(qemuImg('info', 'img.qcow2').code).toBe(1);
    for (const args of [['info'], ['map'], ['check'], ['convert', '-q', 'img.qcow2', 'out.raw']]) {
      const r = args[0] === 'convert' ? cli(...args) : cli(...args, 'img.qcow2');
      expect([args[0], r.code]).toEqual([args[0], 1]);
      expect(r.err).toMatch(LOCKED);
    }
    for (const U of ['-U', '--force-share']) {
      const info = cli('info', U, '--output=json', 'img.qcow2');
      expect([info.code, info.err]).toEqual([0, '']);
      expect(JSON.parse(info.out)).toEqual(JSON.parse(qemuImg('info', '-U', '--output=json', 'img.qcow2').out));
    }
    const chain = cli('info', '-U', '--output=json', '--backing-chain', 'img.qcow2');
    expect(JSON.parse(chain.out)).toEqual(JSON.parse(qemuImg('info', '-U', '--output=json', '--backing-chain', 'img.qcow2').out));
    const map = cli('map', '-U', 'img.qcow2');
    expect(map.code).toBe(0);
    expect(JSON.parse(map.out)).toEqual(JSON.parse(qemuImg('map', '-U', '--output=json', 'img.qcow2').out));
    expect(cli('convert', '-U', '-q', 'img.qcow2', 'ours.raw').code).toBe(0);
    expect(qemuImg('convert', '-U', '-O', 'raw', 'img.qcow2', 'theirs.raw').code).toBe(0);
    expect(sha(p('ours.raw'))).toBe(sha(p('theirs.raw')));
    const check = cli('check', '-U', 'img.qcow2');
    const theirs = qemuImg('check', '-U', 'img.qcow2');
    expect([check.code, check.out]).toEqual([theirs.code, theirs.out]);
    // a repair writes: refused, as qemu-img refuses -U with -r
    const repair = cli('check', '-U', '-r', 'all', 'img.qcow2');
    expect([repair.code, repair.err]).toEqual([1, 'blocklayer check: EINVAL: -U/--force-share: force-share=on can only be used with read-only images (not with -r)\n']);
    expect(qemuImg('check', '-U', '-r', 'all', 'img.qcow2').code).toBe(1);
  }, 180_000);

  it('the backing file and the data file held read-write by qemu-nbd: -U reaches them too (the qcow2 driver opens them sharing)', async () => {
    qemuNbd('qcow2', 'base.qcow2');
    const plain = cli('info', '--backing-chain', 'img.qcow2');
    expect(plain.code).toBe(1);
    expect(plain.err).toMatch(/ELOCKED: .*base\.qcow2/);
    const chain = cli('info', '-U', '--output=json', '--backing-chain', 'img.qcow2');
    expect([chain.code, chain.err]).toEqual([0, '']);
    expect(JSON.parse(chain.out)).toEqual(JSON.parse(qemuImg('info', '-U', '--output=json', '--backing-chain', 'img.qcow2').out));
    expect(cli('convert', '-U', '-q', 'img.qcow2', 'ours.raw').code).toBe(0);
    expect(qemuImg('convert', '-U', '-O', 'raw', 'img.qcow2', 'theirs.raw').code).toBe(0);
    expect(sha(p('ours.raw'))).toBe(sha(p('theirs.raw')));

    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'data_file=d.raw', 'd.qcow2', '1M'], { cwd: dir });
    qemuNbd('raw', 'd.raw');
    expect(cli('map', 'd.qcow2').err).toMatch(/ELOCKED: .*d\.raw/);
    const map = cli('map', '-U', 'd.qcow2');
    expect([map.code, map.err]).toEqual([0, '']);
    expect(JSON.parse(map.out)).toEqual(JSON.parse(qemuImg('map', '-U', '--output=json', 'd.qcow2').out));
  }, 180_000);

  it('our own serve holds the image read-write: info fails with ELOCKED, info -U reads it', async () => {
    const s = await serve(p('img.qcow2'), '-x', 'd', '-k', p('serve.sock'));
    try {
      const plain = cli('info', 'img.qcow2');
      expect(plain.code).toBe(1);
      expect(plain.err).toMatch(LOCKED);
      const info = cli('info', '-U', '--output=json', 'img.qcow2');
      expect([info.code, info.err]).toEqual([0, '']);
      expect(JSON.parse(info.out)).toMatchObject({ format: 'qcow2', 'virtual-size': 4 * 1024 * 1024, 'backing-filename': 'base.qcow2' });
      expect(JSON.parse(qemuImg('info', '-U', '--output=json', 'img.qcow2').out)).toEqual(JSON.parse(info.out));
    } finally {
      s.child.kill('SIGTERM');
      expect(await s.exited).toBe(0);
    }
  }, 120_000);
});

describe('the file driver\'s forceShare option (QEMU force-share)', () => {
  it('needs a read-only node: EINVAL naming forceShare', async () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-force-share-api-'));
    const layer = new BlockLayer();
    try {
      const f = path.join(d, 'a.raw');
      fs.writeFileSync(f, Buffer.alloc(65536));
      await expect(layer.openNode({ driver: 'file', filename: f, forceShare: true })).rejects.toMatchObject({
        code: 'EINVAL',
        field: 'forceShare',
        message: expect.stringContaining('force-share=on can only be used with read-only images'),
      });
      const ro = await layer.openNode({ driver: 'file', filename: f, forceShare: true, readOnly: true });
      expect(ro.readOnly).toBe(true);
    } finally {
      await layer.close();
      fs.rmSync(d, { recursive: true, force: true });
    }
  });
});
