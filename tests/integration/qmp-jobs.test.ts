// The job commands' answers where no job exists, and their argument errors, against
// qemu-storage-daemon: the same script, the same replies.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { type QmpDaemon, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { haveProgram } from '../helpers/tools.js';

let dir: string;
const daemons: QmpDaemon[] = [];
let layer: BlockLayer;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'qmp-jobs-'));
  layer = new BlockLayer();
});

afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop();
  await layer.close();
  rmSync(dir, { recursive: true, force: true });
});

const SCRIPT: [string, Record<string, unknown>?][] = [
  ['query-jobs'],
  ['query-block-jobs'],
  ['job-pause', { id: 'x' }],
  ['job-resume', { id: 'x' }],
  ['job-cancel', { id: 'x' }],
  ['job-complete', { id: 'x' }],
  ['job-finalize', { id: 'x' }],
  ['job-dismiss', { id: 'x' }],
  ['job-complete'],
  ['job-pause', { id: 'x', force: true }],
  ['job-pause', { id: 3 }],
  ['block-job-pause', { device: 'x' }],
  ['block-job-resume', { device: 'x' }],
  ['block-job-cancel', { device: 'x' }],
  ['block-job-cancel', { device: 'x', force: 'yes' }],
  ['block-job-complete', { device: 'x' }],
  ['block-job-finalize', { id: 'x' }],
  ['block-job-dismiss', { id: 'x' }],
  ['block-job-set-speed', { device: 'x', speed: 5 }],
  ['block-job-set-speed', { device: 'x' }],
  ['block-job-cancel', {}],
  ['query-jobs', { x: 1 }],
];

describe('QMP job commands against qemu-storage-daemon', () => {
  it.skipIf(!haveProgram('qemu-storage-daemon'))('answers the job commands without jobs exactly as QEMU does', { timeout: 60_000 }, async () => {
    const qsd = await startQsd(dir, ['--blockdev', 'driver=null-co,node-name=n0,size=1048576']);
    daemons.push(qsd);
    const theirs = [];
    for (const [c, a] of SCRIPT) theirs.push(await qsd.qmp.cmd(c, a));
    await layer.openDrive({ id: 'd0', driver: 'null', size: 1 << 20, nodeName: 'n0' });
    const ours = await startOurQmp(layer, dir);
    daemons.push(ours);
    const mine = [];
    for (const [c, a] of SCRIPT) mine.push(await ours.qmp.cmd(c, a));
    expect(mine).toEqual(theirs);
    expect(JSON.stringify(theirs)).toContain('DeviceNotActive');
  });
});
