import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkImage, isBlockError } from '../../src/index.js';
import { haveQemuTools, qemuImg, qemuIo, setQemuCwd } from '../helpers/qemu-images.js';
import { CLI } from '../helpers/cli.js';

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');

const MiB = 1024 * 1024;
let dir: string;
const p = (name: string) => path.join(dir, name);

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-vmdk-check-'));
  setQemuCwd(dir);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Sets grain table entry `index` of directory entry `gt` of a sparse extent file (header at 0). */
function setGrainEntry(file: string, gt: number, index: number, value: number): void {
  const fd = fs.openSync(p(file), 'r+');
  try {
    const h = Buffer.alloc(512);
    fs.readSync(fd, h, 0, 512, 0);
    const gdOffset = Number(h.readBigUInt64LE(56)) * 512;
    const e = Buffer.alloc(4);
    fs.readSync(fd, e, 0, 4, gdOffset + gt * 4);
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value);
    fs.writeSync(fd, b, 0, 4, e.readUInt32LE(0) * 512 + index * 4);
  } finally {
    fs.closeSync(fd);
  }
}

/** What qemu-img check and our checkImage say of an image: ERROR lines, and the JSON result or the failure. */
async function judge(image: string) {
  const q = spawnSync('qemu-img', ['check', '--output=json', image], { encoding: 'utf8', cwd: dir });
  const theirs = {
    errors: q.stderr.split('\n').filter((l) => l.startsWith('ERROR')),
    result: q.status === 0 ? JSON.parse(q.stdout) : undefined,
    failed: q.status === 1 && /Check failed/.test(q.stderr),
  };
  const lines: string[] = [];
  let result: unknown;
  let failed = false;
  try {
    const r = await checkImage(p(image), { log: (l) => lines.push(l) });
    result = { 'check-errors': r.checkErrors, filename: image, format: r.format };
  } catch (e) {
    if (!isBlockError(e) || e.code !== 'ECORRUPT') throw e;
    failed = true;
  }
  return { ours: { errors: lines, result, failed }, theirs };
}

describe.skipIf(!available)('vmdk check as qemu-img check (QEMU vmdk_co_check)', { timeout: 120_000 }, () => {
  for (const subformat of ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'streamOptimized']) {
    it(`a clean ${subformat} image with data: no errors, the same JSON`, async () => {
      const img = `clean-${subformat}.vmdk`;
      if (subformat === 'streamOptimized') {
        qemuImg('create', '-q', '-f', 'raw', 'clean-src.raw', '3M');
        qemuIo(p('clean-src.raw'), ['write -P 3 0 1M'], 'raw');
        qemuImg('convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', 'clean-src.raw', img);
      } else {
        qemuImg('create', '-q', '-f', 'vmdk', '-o', `subformat=${subformat}`, img, String(2 * 1024 * MiB + 3 * MiB));
        qemuIo(p(img), ['write -P 1 0 64k', `write -P 2 ${2 * 1024 * MiB - 64 * 1024} 1M`], 'vmdk');
      }
      const { ours, theirs } = await judge(img);
      expect(theirs.result).toEqual({ 'check-errors': 0, filename: img, format: 'vmdk' });
      expect(ours).toEqual(theirs);
    });
  }

  it('a grain past the end of a monolithicSparse file: the first one in guest order, and the check fails', async () => {
    qemuImg('create', '-q', '-f', 'vmdk', 'eof.vmdk', '10M');
    qemuIo(p('eof.vmdk'), ['write -P 1 0 64k', 'write -P 2 1M 64k'], 'vmdk');
    setGrainEntry('eof.vmdk', 0, 40, 0x100000);
    setGrainEntry('eof.vmdk', 0, 16, 0x100000);
    const { ours, theirs } = await judge('eof.vmdk');
    expect(theirs.errors).toEqual(['ERROR: cluster offset for sector 2048 points after EOF']);
    expect(ours).toEqual(theirs);
    const e = await checkImage(p('eof.vmdk')).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'ECORRUPT', offset: 2048 * 512 });
  });

  it('a zeroed grain (zeroed_grain=on) is not a grain past the end', async () => {
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'zeroed_grain=on', 'zeroed.vmdk', '4M');
    qemuIo(p('zeroed.vmdk'), ['write -P 1 0 256k', 'write -z 64k 64k'], 'vmdk');
    const { ours, theirs } = await judge('zeroed.vmdk');
    expect(theirs.failed).toBe(false);
    expect(ours).toEqual(theirs);
  });

  it('a grain past the end of the third extent of a twoGbMaxExtentSparse disk', async () => {
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', 'split.vmdk', '5G');
    qemuIo(p('split.vmdk'), ['write -P 1 2047M 2M', 'write -P 2 4100M 64k'], 'vmdk');
    setGrainEntry('split-s003.vmdk', 0, 3, 0x100000);
    const { ours, theirs } = await judge('split.vmdk');
    expect(theirs.errors).toEqual(['ERROR: cluster offset for sector 8388992 points after EOF']);
    expect(ours).toEqual(theirs);
  });

  it('a flat extent file emptied: its start is past its end', async () => {
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentFlat', 'flat.vmdk', '3G');
    fs.truncateSync(p('flat-f002.vmdk'), 0);
    const { ours, theirs } = await judge('flat.vmdk');
    expect(theirs.errors).toEqual(['ERROR: cluster offset for sector 4194304 points after EOF']);
    expect(ours).toEqual(theirs);
  });

  it("extents that are not whole grains: QEMU's probe steps by grains across the boundary, and so do we", async () => {
    qemuImg('create', '-q', '-f', 'vmdk', 'odd-1.vmdk', String(200 * 512));
    qemuImg('create', '-q', '-f', 'vmdk', 'odd-2.vmdk', '1M');
    qemuIo(p('odd-2.vmdk'), ['write -P 1 0 256k'], 'vmdk');
    setGrainEntry('odd-2.vmdk', 0, 1, 0x100000);
    fs.writeFileSync(
      p('odd.vmdk'),
      '# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="twoGbMaxExtentSparse"\n\n# Extent description\nRW 200 SPARSE "odd-1.vmdk"\nRW 2048 SPARSE "odd-2.vmdk"\n',
    );
    const { ours, theirs } = await judge('odd.vmdk');
    expect(theirs.errors).toEqual(['ERROR: cluster offset for sector 384 points after EOF']);
    expect(ours).toEqual(theirs);
  });
});

const cli = (...args: string[]) => spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8', cwd: dir });

describe.skipIf(!available)('blocklayer check on vmdk: the output and exit codes of qemu-img check', { timeout: 180_000 }, () => {
  it('clean: the same text and JSON, exit 0; corrupt: the ERROR line, exit 1, nothing on stdout; -r all: 63', () => {
    qemuImg('create', '-q', '-f', 'vmdk', 'cli.vmdk', '4M');
    qemuIo(p('cli.vmdk'), ['write -P 1 0 128k'], 'vmdk');
    const q = (...a: string[]) => spawnSync('qemu-img', a, { encoding: 'utf8', cwd: dir });
    for (const args of [['check', 'cli.vmdk'], ['check', '--output=json', 'cli.vmdk'], ['check', '-r', 'all', 'cli.vmdk']]) {
      const ours = cli(...args);
      const theirs = q(...args);
      expect(ours.status).toBe(theirs.status);
      if (args.includes('--output=json')) expect(JSON.parse(ours.stdout)).toEqual(JSON.parse(theirs.stdout));
      else expect(ours.stdout).toBe(theirs.stdout);
    }
    expect(cli('check', '-r', 'all', 'cli.vmdk').status).toBe(63);
    setGrainEntry('cli.vmdk', 0, 1, 0x100000);
    const ours = cli('check', 'cli.vmdk');
    const theirs = q('check', 'cli.vmdk');
    expect([ours.status, theirs.status]).toEqual([1, 1]);
    expect(ours.stdout).toBe('');
    expect(theirs.stdout).toBe('');
    expect(ours.stderr.split('\n')[0]).toBe(theirs.stderr.split('\n')[0]);
    expect(ours.stderr).toMatch(/Check failed/);
  });
});
