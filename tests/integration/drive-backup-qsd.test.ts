// drive-backup against qemu-storage-daemon, the same QMP script on both (each in its own
// directory, named <dir> in the replies): argument errors, a full backup into a new image, a
// sync=none backup whose new image has the source as its backing file, a backup into an existing
// image (format probed), and drive-backup as a transaction action beside block-dirty-bitmap-add.
// Replies and job events must be the same; the images are judged by qemu-img compare/info/check.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { type QmpClient, type QmpDaemon, type QmpEvent, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { haveProgram, ok, run } from '../helpers/tools.js';

const HAVE = haveProgram('qemu-storage-daemon') && haveProgram('qemu-img') && haveProgram('qemu-io');
const SIZE = 4 << 20;

let dir: string;
const daemons: QmpDaemon[] = [];
let layer: BlockLayer;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'drive-backup-'));
  layer = new BlockLayer();
});

afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop();
  await layer.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Per daemon: a source with data, an existing target of the same size and one too small. */
async function images(): Promise<void> {
  const src = join(dir, 'src.qcow2');
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', src, String(SIZE)]);
  await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 3M 512k', src]);
  for (const who of ['qsd', 'ours']) {
    mkdirSync(join(dir, who));
    copyFileSync(src, join(dir, who, 'src.qcow2'));
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, who, 'exist.qcow2'), String(SIZE)]);
    await ok('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, who, 'small.qcow2'), '1M']);
  }
}

const jobEvents = (events: readonly QmpEvent[]) => events.filter((e) => e.event === 'JOB_STATUS_CHANGE' || e.event.startsWith('BLOCK_JOB_'));

async function script(qmp: QmpClient, sub: string): Promise<{ replies: string[]; events: QmpEvent[] }> {
  const t = (name: string) => join(sub, `${name}.qcow2`);
  const bad: Record<string, unknown>[] = [
    { device: 'src', target: t('a') },
    { device: 'src', sync: 'full' },
    { device: 'src', target: t('a'), sync: 'full', mode: 'sometimes' },
    { device: 'src', target: t('a'), sync: 'sideways' },
    { device: 'src', target: t('a'), sync: 'full', colour: 'red' },
    { device: 'src', target: t('a'), sync: 'full', speed: 'x' },
    { device: 'nope', target: t('a'), sync: 'full' },
    { device: 'src', target: t('missing'), sync: 'full', mode: 'existing' },
    { device: 'src', target: t('small'), sync: 'full', mode: 'existing', format: 'qcow2' },
    { device: 'src', target: t('b'), sync: 'incremental' },
    { device: 'src', target: t('c'), sync: 'full', 'job-id': '1x' },
  ];
  const replies: unknown[] = [];
  for (const args of bad) replies.push(await qmp.cmd('drive-backup', args));
  // A full backup into a new image (format: the source's).
  replies.push(await qmp.cmd('drive-backup', { 'job-id': 'f', device: 'src', target: t('full'), sync: 'full' }));
  await qmp.waitJobStatus('f', 'null');
  // sync=none: a new image over the source; cancelled (it runs until then).
  replies.push(await qmp.cmd('drive-backup', { 'job-id': 'n', device: 'src', target: t('none'), sync: 'none', format: 'qcow2' }));
  await qmp.waitJobStatus('n', 'running');
  replies.push(await qmp.cmd('block-job-cancel', { device: 'n' }));
  await qmp.waitJobStatus('n', 'null');
  // Into an existing image, its format probed.
  replies.push(await qmp.cmd('drive-backup', { 'job-id': 'e', device: 'src', target: t('exist'), sync: 'full', mode: 'existing' }));
  await qmp.waitJobStatus('e', 'null');
  // As a transaction action, with a bitmap made at the same point.
  replies.push(
    await qmp.cmd('transaction', {
      actions: [
        { type: 'block-dirty-bitmap-add', data: { node: 'src', name: 'b0' } },
        { type: 'drive-backup', data: { 'job-id': 't', device: 'src', target: t('tx'), sync: 'full' } },
      ],
    }),
  );
  await qmp.waitJobStatus('t', 'null');
  // A failing transaction: its drive-backup is undone.
  replies.push(
    await qmp.cmd('transaction', {
      actions: [
        { type: 'drive-backup', data: { 'job-id': 'u', device: 'src', target: t('tx2'), sync: 'full' } },
        { type: 'block-dirty-bitmap-add', data: { node: 'src', name: 'b0' } },
      ],
    }),
  );
  replies.push(await qmp.cmd('query-jobs'));
  return { replies: replies.map((r) => JSON.stringify(r).replaceAll(sub, '<dir>')), events: jobEvents(qmp.events) };
}

describe('drive-backup against qemu-storage-daemon', () => {
  it.skipIf(!HAVE)('same replies, same job events, same images', { timeout: 60_000 }, async () => {
    await images();
    const qsdDir = join(dir, 'qsd');
    const qsd = await startQsd(dir, ['--blockdev', `driver=file,node-name=src-file,filename=${join(qsdDir, 'src.qcow2')}`, '--blockdev', 'driver=qcow2,node-name=src,file=src-file']);
    daemons.push(qsd);
    const theirs = await script(qsd.qmp, qsdDir);
    await qsd.stop();
    daemons.splice(0);

    const ourDir = join(dir, 'ours');
    await layer.addNode({ driver: 'qcow2', nodeName: 'src', file: { driver: 'file', filename: join(ourDir, 'src.qcow2') } });
    const ours = await startOurQmp(layer, dir);
    daemons.push(ours);
    const mine = await script(ours.qmp, ourDir);
    await ours.stop();
    daemons.splice(0);
    await layer.close();

    expect(mine.replies).toEqual(theirs.replies);
    expect(mine.events).toEqual(theirs.events);
    for (const sub of [qsdDir, ourDir]) {
      for (const name of ['full', 'exist', 'tx']) {
        expect((await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', join(sub, 'src.qcow2'), join(sub, `${name}.qcow2`)])).code, `${sub} ${name}`).toBe(0);
        expect((await run('qemu-img', ['check', join(sub, `${name}.qcow2`)])).code).toBe(0);
      }
      // sync=none: the new image names the source as its backing file and reads as the source through it.
      const info = JSON.parse((await run('qemu-img', ['info', '--output=json', join(sub, 'none.qcow2')])).stdout) as { 'backing-filename'?: string; 'backing-filename-format'?: string };
      expect(info['backing-filename']).toBe(join(sub, 'src.qcow2'));
      expect(info['backing-filename-format']).toBe('qcow2');
      expect((await run('qemu-img', ['compare', join(sub, 'src.qcow2'), join(sub, 'none.qcow2')])).code).toBe(0);
    }
    const cmp = await run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', join(qsdDir, 'full.qcow2'), join(ourDir, 'full.qcow2')]);
    expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
  });
  it.skipIf(!HAVE)('sync=top over a backing chain: the new image is made over the source\'s backing file; same events, same image', { timeout: 60_000 }, async () => {
    const topScript = async (qmp: QmpClient, sub: string): Promise<{ replies: unknown[]; events: QmpEvent[] }> => {
      const replies: unknown[] = [];
      replies.push(await qmp.cmd('drive-backup', { 'job-id': 'top', device: 'src', target: join(sub, 'tt.qcow2'), sync: 'top' }));
      await qmp.waitJobStatus('top', 'null');
      return { replies, events: jobEvents(qmp.events) };
    };
    const results: { replies: unknown[]; events: QmpEvent[] }[] = [];
    for (const who of ['qsd', 'ours']) {
      const sub = join(dir, who);
      mkdirSync(sub);
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', join(sub, 'base.qcow2'), String(SIZE)]);
      await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 2M', join(sub, 'base.qcow2')]);
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', join(sub, 'base.qcow2'), '-F', 'qcow2', join(sub, 'src.qcow2')]);
      await ok('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x22 1M 512k', '-c', 'write -P 0x33 3M 64k', join(sub, 'src.qcow2')]);
      if (who === 'qsd') {
        const qsd = await startQsd(dir, ['--blockdev', `driver=file,node-name=src-file,filename=${join(sub, 'src.qcow2')}`, '--blockdev', 'driver=qcow2,node-name=src,file=src-file']);
        daemons.push(qsd);
        results.push(await topScript(qsd.qmp, sub));
        await qsd.stop();
        daemons.splice(0);
      } else {
        await layer.addNode({ driver: 'qcow2', nodeName: 'src', file: { driver: 'file', filename: join(sub, 'src.qcow2') } });
        const ours = await startOurQmp(layer, dir);
        daemons.push(ours);
        results.push(await topScript(ours.qmp, sub));
        await ours.stop();
        daemons.splice(0);
        await layer.close();
      }
      const info = JSON.parse((await run('qemu-img', ['info', '--output=json', join(sub, 'tt.qcow2')])).stdout) as { 'backing-filename'?: string };
      expect(info['backing-filename'], who).toBe(join(sub, 'base.qcow2'));
      expect((await run('qemu-img', ['compare', join(sub, 'src.qcow2'), join(sub, 'tt.qcow2')])).code, who).toBe(0);
      expect((await run('qemu-img', ['check', join(sub, 'tt.qcow2')])).code).toBe(0);
    }
    expect(results[1]).toEqual(results[0]);
    // Only the top's clusters were copied: the new image's own layer maps like the source's.
    const own = async (f: string) => (JSON.parse((await run('qemu-img', ['map', '--output=json', f])).stdout) as { start: number; length: number; depth: number; data: boolean }[]).filter((e) => e.depth === 0 && e.data).map((e) => [e.start, e.length]);
    expect(await own(join(dir, 'ours', 'tt.qcow2'))).toEqual(await own(join(dir, 'qsd', 'tt.qcow2')));
    expect((await own(join(dir, 'ours', 'tt.qcow2'))).length).toBeGreaterThan(0);
  });
});
