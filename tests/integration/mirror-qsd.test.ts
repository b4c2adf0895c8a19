// blockdev-mirror against qemu-storage-daemon: the same QMP script (argument errors, a full
// mirror completed, a second one soft-cancelled while READY) gets the same replies and the same
// events, and the targets are the same images (qemu-img compare, qemu-img check).
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { type QmpClient, type QmpDaemon, type QmpEvent, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { haveProgram, run } from '../helpers/tools.js';

const HAVE = haveProgram('qemu-storage-daemon') && haveProgram('qemu-img') && haveProgram('qemu-io');
const SIZE = 8 << 20;

let dir: string;
const daemons: QmpDaemon[] = [];
let layer: BlockLayer;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mirror-qsd-'));
  layer = new BlockLayer();
});

afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop();
  await layer.close();
  rmSync(dir, { recursive: true, force: true });
});

async function sh(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await run(cmd, args);
  return r;
}

/** A source with data, a zeroed range and holes; three empty targets, for each daemon. */
async function images(): Promise<void> {
  const src = join(dir, 'src.qcow2');
  await sh('qemu-img', ['create', '-q', '-f', 'qcow2', src, String(SIZE)]);
  await sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0xa5 3M 256k', '-c', 'write -z 5M 1M', '-c', 'write -P 0x33 7340544 4096', src]);
  for (const who of ['qsd', 'ours']) {
    copyFileSync(src, join(dir, `src-${who}.qcow2`));
    for (const t of ['t1', 't2']) await sh('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, `${t}-${who}.qcow2`), String(SIZE)]);
  }
}

const NODES = ['src', 't1', 't2'];

/** The script's commands that fail, in order (each answered without starting a job). */
const BAD: [string, Record<string, unknown>][] = [
  ['blockdev-mirror', {}],
  ['blockdev-mirror', { device: 'src' }],
  ['blockdev-mirror', { device: 'src', target: 't1' }],
  ['blockdev-mirror', { device: 'src', target: 't1', sync: 'sideways' }],
  ['blockdev-mirror', { device: 'src', target: 't1', sync: 'full', colour: 'red' }],
  ['blockdev-mirror', { device: 'src', target: 'nope', sync: 'full' }],
  ['blockdev-mirror', { device: 'nope', target: 't1', sync: 'full' }],
  ['blockdev-mirror', { device: 'src', target: 't1', sync: 'full' }],
  ['blockdev-mirror', { 'job-id': 'm', device: 'src', target: 't1', sync: 'full', granularity: 1000 }],
  ['blockdev-mirror', { 'job-id': 'm', device: 'src', target: 't1', sync: 'full', granularity: 256 }],
  ['blockdev-mirror', { 'job-id': 'm', device: 'src', target: 't1', sync: 'full', granularity: 'big' }],
  ['blockdev-mirror', { 'job-id': 'm', device: 'src', target: 't1', sync: 'full', 'buf-size': -1 }],
  ['blockdev-mirror', { 'job-id': 'm', device: 'src', target: 'src', sync: 'full' }],
  ['blockdev-mirror', { 'job-id': 'm', device: 'src', target: 't1', sync: 'incremental' }],
  ['blockdev-mirror', { 'job-id': 'm', device: 'src', target: 't1', sync: 'full', 'on-target-error': 'panic' }],
  ['blockdev-mirror', { 'job-id': 'm', device: 'src', target: 't1', sync: 'full', 'copy-mode': 'eager' }],
  ['blockdev-mirror', { 'job-id': '1m', device: 'src', target: 't1', sync: 'full' }],
];

/** Runs the script on a daemon; returns the replies and the events. */
async function script(qmp: QmpClient): Promise<{ replies: unknown[]; events: QmpEvent[] }> {
  const replies: unknown[] = [];
  for (const [c, a] of BAD) replies.push(await qmp.cmd(c, a));
  // A full mirror, completed: the pivot (no users here), events through to null.
  replies.push(await qmp.cmd('blockdev-mirror', { 'job-id': 'm', device: 'src', target: 't1', sync: 'full', granularity: 65536 }));
  await qmp.waitEvent('BLOCK_JOB_READY', (d) => d.device === 'm');
  replies.push(await qmp.cmd('blockdev-mirror', { 'job-id': 'm', device: 't2', target: 't1', sync: 'full' }));
  replies.push(await qmp.cmd('job-complete', { id: 'm' }));
  await qmp.waitJobStatus('m', 'null');
  // A second one, soft-cancelled while READY: it completes, nothing pivoted; manual dismiss.
  replies.push(await qmp.cmd('blockdev-mirror', { 'job-id': 'm2', device: 'src', target: 't2', sync: 'full', 'auto-dismiss': false }));
  await qmp.waitEvent('BLOCK_JOB_READY', (d) => d.device === 'm2');
  replies.push(await qmp.cmd('block-job-cancel', { device: 'm2' }));
  await qmp.waitJobStatus('m2', 'concluded');
  replies.push(await qmp.cmd('query-jobs'));
  replies.push(await qmp.cmd('job-dismiss', { id: 'm2' }));
  await qmp.waitJobStatus('m2', 'null');
  return { replies, events: qmp.events };
}

describe('blockdev-mirror against qemu-storage-daemon', () => {
  it.skipIf(!HAVE)('same replies, same events, same target images', { timeout: 60_000 }, async () => {
    await images();
    const qsdArgs: string[] = [];
    for (const n of NODES) {
      qsdArgs.push('--blockdev', `driver=file,node-name=${n}-file,filename=${join(dir, `${n}-qsd.qcow2`)}`);
      qsdArgs.push('--blockdev', `driver=qcow2,node-name=${n},file=${n}-file`);
    }
    const qsd = await startQsd(dir, qsdArgs);
    daemons.push(qsd);
    const theirs = await script(qsd.qmp);
    await qsd.stop();
    daemons.splice(0);

    for (const n of NODES) await layer.addNode({ driver: 'qcow2', nodeName: n, file: { driver: 'file', filename: join(dir, `${n}-ours.qcow2`) } });
    const ours = await startOurQmp(layer, dir);
    daemons.push(ours);
    const mine = await script(ours.qmp);
    await ours.stop();
    daemons.splice(0);
    await layer.close();

    expect(mine.replies).toEqual(theirs.replies);
    expect(mine.events).toEqual(theirs.events);
    expect(JSON.stringify(theirs.events)).toContain('BLOCK_JOB_READY');
    for (const t of ['t1', 't2']) {
      const cmp = await sh('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', join(dir, `${t}-qsd.qcow2`), join(dir, `${t}-ours.qcow2`)]);
      expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
      expect((await sh('qemu-img', ['compare', join(dir, 'src-ours.qcow2'), join(dir, `${t}-ours.qcow2`)])).code).toBe(0);
      expect((await sh('qemu-img', ['check', join(dir, `${t}-ours.qcow2`)])).code).toBe(0);
    }
  });

  it.skipIf(!HAVE)('drive-mirror: a new qcow2 (absolute-paths) and an existing image, same events, same images', { timeout: 60_000 }, async () => {
    await images();
    const drive = async (qmp: QmpClient, who: string): Promise<{ replies: unknown[]; events: QmpEvent[] }> => {
      const replies: unknown[] = [];
      const fresh = join(dir, `new-${who}.qcow2`);
      replies.push(await qmp.cmd('drive-mirror', { device: 'src', target: fresh, sync: 'full', format: 'qcow2' }));
      replies.push(await qmp.cmd('drive-mirror', { device: 'src', target: fresh, sync: 'full', mode: 'sometimes' }));
      replies.push(await qmp.cmd('drive-mirror', { 'job-id': 'd', device: 'nope', target: fresh, sync: 'full' }));
      replies.push(await qmp.cmd('drive-mirror', { 'job-id': 'd', device: 'src', target: fresh, sync: 'full', format: 'qcow2' }));
      await qmp.waitEvent('BLOCK_JOB_READY', (d) => d.device === 'd');
      replies.push(await qmp.cmd('job-complete', { id: 'd' }));
      await qmp.waitJobStatus('d', 'null');
      replies.push(await qmp.cmd('drive-mirror', { 'job-id': 'e', device: 'src', target: join(dir, `t1-${who}.qcow2`), sync: 'full', mode: 'existing', format: 'qcow2' }));
      await qmp.waitEvent('BLOCK_JOB_READY', (d) => d.device === 'e');
      replies.push(await qmp.cmd('block-job-cancel', { device: 'e', force: true }));
      await qmp.waitJobStatus('e', 'null');
      return { replies, events: qmp.events };
    };
    const qsd = await startQsd(dir, ['--blockdev', `driver=file,node-name=src-file,filename=${join(dir, 'src-qsd.qcow2')}`, '--blockdev', 'driver=qcow2,node-name=src,file=src-file']);
    daemons.push(qsd);
    const theirs = await drive(qsd.qmp, 'qsd');
    await qsd.stop();
    daemons.splice(0);
    await layer.addNode({ driver: 'qcow2', nodeName: 'src', file: { driver: 'file', filename: join(dir, 'src-ours.qcow2') } });
    const ours = await startOurQmp(layer, dir);
    daemons.push(ours);
    const mine = await drive(ours.qmp, 'ours');
    await ours.stop();
    daemons.splice(0);
    await layer.close();
    expect(mine.replies).toEqual(theirs.replies);
    expect(mine.events).toEqual(theirs.events);
    for (const t of ['new', 't1']) {
      const cmp = await sh('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', join(dir, `${t}-qsd.qcow2`), join(dir, `${t}-ours.qcow2`)]);
      expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
      expect((await sh('qemu-img', ['check', join(dir, `${t}-ours.qcow2`)])).code).toBe(0);
    }
  });

  it.skipIf(!HAVE)('sync=top over a backing chain copies only the top, onto a target with the same backing: same events, same image', { timeout: 60_000 }, async () => {
    const base = join(dir, 'base.qcow2');
    await sh('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(SIZE)]);
    await sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 4M', base]);
    const top = join(dir, 'top.qcow2');
    await sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
    await sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x22 1M 512k', '-c', 'write -P 0x33 6M 128k', top]);
    for (const who of ['qsd', 'ours']) {
      copyFileSync(top, join(dir, `top-${who}.qcow2`));
      await sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', join(dir, `tt-${who}.qcow2`)]);
    }
    const topScript = async (qmp: QmpClient): Promise<{ replies: unknown[]; events: QmpEvent[] }> => {
      const replies: unknown[] = [];
      replies.push(await qmp.cmd('blockdev-mirror', { 'job-id': 't', device: 'src', target: 'tgt', sync: 'top' }));
      await qmp.waitEvent('BLOCK_JOB_READY', (d) => d.device === 't');
      replies.push(await qmp.cmd('job-complete', { id: 't' }));
      await qmp.waitJobStatus('t', 'null');
      return { replies, events: qmp.events };
    };
    const qsd = await startQsd(dir, [
      '--blockdev', `driver=file,node-name=src-file,filename=${join(dir, 'top-qsd.qcow2')}`, '--blockdev', 'driver=qcow2,node-name=src,file=src-file',
      '--blockdev', `driver=file,node-name=tgt-file,filename=${join(dir, 'tt-qsd.qcow2')}`, '--blockdev', 'driver=qcow2,node-name=tgt,file=tgt-file',
    ]);
    daemons.push(qsd);
    const theirs = await topScript(qsd.qmp);
    await qsd.stop();
    daemons.splice(0);
    await layer.addNode({ driver: 'qcow2', nodeName: 'src', file: { driver: 'file', filename: join(dir, 'top-ours.qcow2') } });
    await layer.addNode({ driver: 'qcow2', nodeName: 'tgt', file: { driver: 'file', filename: join(dir, 'tt-ours.qcow2') } });
    const ours = await startOurQmp(layer, dir);
    daemons.push(ours);
    const mine = await topScript(ours.qmp);
    await ours.stop();
    daemons.splice(0);
    await layer.close();
    expect(mine.replies).toEqual(theirs.replies);
    expect(mine.events).toEqual(theirs.events);
    // Only the top's clusters were copied: the target's own layer maps like the source's.
    const depth0 = async (f: string) => (JSON.parse((await sh('qemu-img', ['map', '--output=json', '-f', 'qcow2', f])).stdout) as { start: number; length: number; depth: number; data: boolean }[]).filter((e) => e.depth === 0 && e.data).map((e) => [e.start, e.length]);
    expect((await depth0(join(dir, 'tt-ours.qcow2'))).length).toBeGreaterThan(0);
    expect(await depth0(join(dir, 'tt-ours.qcow2'))).toEqual(await depth0(join(dir, 'tt-qsd.qcow2')));
    expect(await depth0(join(dir, 'tt-ours.qcow2'))).toEqual(await depth0(join(dir, 'top-ours.qcow2')));
    const cmp = await sh('qemu-img', ['compare', join(dir, 'tt-qsd.qcow2'), join(dir, 'tt-ours.qcow2')]);
    expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
  });
});
