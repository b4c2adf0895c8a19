import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveProgram } from '../helpers/tools.js';
import { CLI } from '../helpers/cli.js';

/** `blocklayer snapshot` against `qemu-img snapshot`: the same table, the same lookups, exit codes and words. */

const available = haveProgram('qemu-img');
if (!available && process.env.CI === 'true') throw new Error('qemu-img missing in CI');

let dir = '';
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-cli-snapshot-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function blocklayer(...args: string[]) {
  const r = spawnSync(process.execPath, [...CLI, 'snapshot', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function qemuImg(...args: string[]) {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8', cwd: dir });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe.skipIf(!available)('blocklayer snapshot', () => {
  it('-c, -l, -a, -d: qemu-img lists our snapshots with the very table we print; a name that is no snapshot fails as in qemu-img', async () => {
    const img = path.join(dir, 'a.qcow2');
    expect(qemuImg('create', '-q', '-f', 'qcow2', img, '1M').code).toBe(0);
    // No snapshots: both print nothing.
    expect(blocklayer('-l', img)).toMatchObject({ code: 0, out: '' });
    expect(blocklayer('-c', 'first', img).code).toBe(0);
    expect(qemuImg('snapshot', '-c', 'second', img).code).toBe(0);
    const ours = blocklayer('-l', img);
    expect(ours.code).toBe(0);
    expect(ours.out).toBe(qemuImg('snapshot', '-l', img).out);
    expect(ours.out.split('\n').slice(0, 2)).toEqual(['Snapshot list:', 'ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT']);
    expect(blocklayer('-a', 'second', img).code).toBe(0);
    expect(blocklayer('-d', 'first', img).code).toBe(0);
    expect(qemuImg('check', img).code).toBe(0);
    expect(qemuImg('snapshot', '-l', img).out).toContain('second');
    expect(qemuImg('snapshot', '-l', img).out).not.toContain('first');

    const miss = blocklayer('-d', 'first', img);
    expect(miss.code).toBe(1);
    expect(miss.err).toContain(qemuImg('snapshot', '-d', 'first', img).err.replace('qemu-img: ', '').trim());
    const mix = blocklayer('-l', '-c', 'x', img);
    expect(mix.code).toBe(1);
    expect(mix.err).toContain("Cannot mix '-l', '-a', '-c', '-d'");
    expect(blocklayer('-l').err).toContain('Expecting one image file name');
  }, 180_000);
});
