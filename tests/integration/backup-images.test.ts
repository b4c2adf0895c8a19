// Backups into qcow2 images judged by qemu-img: sync=top copies only what the top image holds
// (the target over the same backing file reads the same, and maps nothing else), and compress
// writes compressed clusters that qemu-img check counts and compare reads back.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { haveProgram, ok } from '../helpers/tools.js';

const HAVE = haveProgram('qemu-img') && haveProgram('qemu-io');
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'backup-img-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const qcow2 = (name: string) => ({ driver: 'qcow2', nodeName: name, file: { driver: 'file', filename: join(dir, `${name}.qcow2`) } }) as never;

type MapEntry = { start: number; length: number; depth: number; data: boolean };

describe('backup into qcow2 images', () => {
  it.skipIf(!HAVE)('sync=top copies the clusters the top image holds and nothing of its backing file', { timeout: 60_000 }, async () => {
    const base = join(dir, 'base.qcow2');
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', base, '4M']);
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 4M', base]);
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', join(dir, 'top.qcow2')]);
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x22 64k 64k', '-c', 'write -P 0x33 1M 200k', '-c', 'write -z 3M 64k', join(dir, 'top.qcow2')]);
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', join(dir, 'tgt.qcow2')]);
    const layer = new BlockLayer();
    await layer.addNode({ driver: 'qcow2', nodeName: 'top', file: { driver: 'file', filename: join(dir, 'top.qcow2') } } as never);
    await layer.addNode(qcow2('tgt'));
    const job = await layer.startJob({ type: 'backup', jobId: 't', device: 'top', target: 'tgt', sync: 'top' });
    await job.wait();
    // 64k + 4 clusters from 1M (200k) + 64k: 6 clusters.
    expect(job.progress).toEqual({ current: 6 * 65536, total: 6 * 65536 });
    await layer.close();
    await ok('qemu-img', ['compare', '-q', join(dir, 'top.qcow2'), join(dir, 'tgt.qcow2')]);
    await ok('qemu-img', ['check', '-q', join(dir, 'tgt.qcow2')]);
    const map = JSON.parse(await ok('qemu-img', ['map', '--output=json', join(dir, 'tgt.qcow2')])) as MapEntry[];
    const own = map.filter((e) => e.depth === 0);
    const ownBytes = own.reduce((n, e) => n + e.length, 0);
    expect(ownBytes).toBe(6 * 65536);
  });

  it.skipIf(!HAVE)('compress writes compressed clusters: qemu-img check counts them, compare reads the source back', { timeout: 60_000 }, async () => {
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'src.qcow2'), '2M']);
    await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x41 0 1M', '-c', 'write -P 0x42 1536k 256k', join(dir, 'src.qcow2')]);
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'tgt.qcow2'), '2M']);
    const layer = new BlockLayer();
    await layer.addNode(qcow2('src'));
    await layer.addNode(qcow2('tgt'));
    const job = await layer.startJob({ type: 'backup', jobId: 'c', device: 'src', target: 'tgt', sync: 'full', compress: true });
    await job.wait();
    await layer.close();
    await ok('qemu-img', ['compare', '-q', join(dir, 'src.qcow2'), join(dir, 'tgt.qcow2')]);
    const check = JSON.parse(await ok('qemu-img', ['check', '--output=json', join(dir, 'tgt.qcow2')])) as { 'compressed-clusters': number; 'allocated-clusters': number };
    expect(check['compressed-clusters']).toBe(20);
  });
});
