// blockdev-add / blockdev-del / query-named-block-nodes against qemu-storage-daemon: the same
// script, the same replies (errors included), the same named nodes.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { type QmpDaemon, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { haveProgram, ok } from '../helpers/tools.js';

let dir: string;
const daemons: QmpDaemon[] = [];
let layer: BlockLayer;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'qmp-blockdev-'));
  layer = new BlockLayer();
});

afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop();
  await layer.close();
  rmSync(dir, { recursive: true, force: true });
});

type Step = [string, Record<string, unknown>?];

/** The script, with `@` standing for the image directory of one daemon. */
function script(at: string): Step[] {
  const file = (name: string) => ({ driver: 'file', filename: join(at, name) });
  return [
    ['blockdev-add', { driver: 'null-co' }],
    ['blockdev-add', { driver: 'null-co', 'node-name': 'n0', size: 1048576 }],
    ['blockdev-add', { driver: 'null-co', 'node-name': 'n0' }],
    ['blockdev-add', { driver: 'null-co', 'node-name': 'n1', bogus: 1 }],
    ['blockdev-add', { driver: 'nosuch', 'node-name': 'n1' }],
    ['blockdev-add', { 'node-name': 'n1' }],
    ['blockdev-add', { driver: 3, 'node-name': 'n1' }],
    ['blockdev-add', { ...file('nope'), 'node-name': 'f1' }],
    ['blockdev-add', { driver: 'file', 'node-name': 'f1' }],
    ['blockdev-add', { driver: 'file', 'node-name': 'f1', filename: 3 }],
    ['blockdev-add', { ...file('base.qcow2'), 'node-name': 'f1' }],
    ['blockdev-add', { driver: 'qcow2', 'node-name': 'q1', file: 'f1' }],
    ['blockdev-add', { driver: 'qcow2', 'node-name': 'q2', file: 'nosuch' }],
    ['blockdev-add', { driver: 'qcow2', 'node-name': 'q2', file: 7 }],
    ['blockdev-add', { driver: 'raw', 'node-name': 'r2', file: { ...file('raw.img'), bad: 1 } }],
    ['blockdev-add', { driver: 'raw', 'node-name': 'r2', file: { driver: 'file' } }],
    ['blockdev-add', { driver: 'raw', 'node-name': 'r2', file: { ...file('raw.img'), 'node-name': 'r2f' } }],
    ['blockdev-add', { driver: 'raw', 'node-name': '1bad', file: file('raw.img') }],
    ['blockdev-add', { driver: 'raw', 'node-name': 'r3', 'read-only': 'yes', file: file('raw.img') }],
    ['blockdev-add', { driver: 'null-co', 'node-name': 'n3', size: '12' }],
    ['blockdev-add', { driver: 'raw', 'node-name': 'r4', file: { ...file('raw.img'), 'node-name': 'n0' } }],
    ['blockdev-add', { driver: 'qcow2', 'node-name': 'q5', file: file('raw3.img') }],
    ['blockdev-add', { driver: 'raw', 'node-name': 'r5', discard: 'maybe', file: 'n0' }],
    ['blockdev-add', { driver: 'raw', 'node-name': 'r5', cache: { direct: false, 'no-flush': false }, discard: 'unmap', 'detect-zeroes': 'off', 'auto-read-only': true, offset: 512, size: 1024, file: 'n0' }],
    ['blockdev-add', { driver: 'raw', 'node-name': 'r6', 'read-only': true, 'force-share': true, file: file('raw2.img') }],
    ['blockdev-add', { ...file('raw2.img'), 'node-name': 'r7', 'force-share': true }],
    ['blockdev-add', { driver: 'qcow2', 'node-name': 'o1', backing: null, file: { ...file('over.qcow2'), 'node-name': 'o1f' } }],
    ['blockdev-add', { driver: 'qcow2', 'node-name': 'o2', backing: 7, file: file('over.qcow2') }],
    ['blockdev-add', { driver: 'nbd', 'node-name': 'b1', server: { type: 'unix' } }],
    ['blockdev-add', { driver: 'nbd', 'node-name': 'b1', server: { type: 'tcp', path: 'x' } }],
    ['blockdev-add', { driver: 'throttle', 'node-name': 't1', file: 'n0' }],
    ['blockdev-del', { 'node-name': 'f1' }],
    ['blockdev-del', { 'node-name': 'nosuch' }],
    ['blockdev-del', { 'node-name': 'r2f' }],
    ['blockdev-del', {}],
    ['blockdev-del', { 'node-name': 'n0', x: 1 }],
    ['blockdev-del', { 'node-name': 'q1' }],
    ['blockdev-del', { 'node-name': 'f1' }],
  ];
}

async function runScript(qmp: QmpDaemon['qmp'], at: string) {
  const out = [];
  for (const [c, a] of script(at)) out.push(await qmp.cmd(c, a));
  const nodes = (await qmp.ok('query-named-block-nodes')) as { 'node-name': string; drv: string; ro: boolean; image: { 'virtual-size': number } }[];
  // Ours reports null-co as 'null' (its driver's name, kept for existing users).
  // QEMU rounds a file node's length up to 512 bytes (bdrv_getlength counts sectors); ours is the file's: not compared.
  const named = nodes.filter((n) => !n['node-name'].startsWith('#')).map((n) => ({ name: n['node-name'], drv: n.drv === 'null-co' ? 'null' : n.drv, ro: n.ro, size: n.drv === 'file' ? 'file' : n.image['virtual-size'] }));
  return { out, named: named.sort((a, b) => a.name.localeCompare(b.name)) };
}

async function images(at: string): Promise<void> {
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', join(at, 'base.qcow2'), '1M']);
  await ok('qemu-img', ['create', '-q', '-f', 'raw', join(at, 'raw.img'), '1M']);
  await ok('qemu-img', ['create', '-q', '-f', 'raw', join(at, 'raw2.img'), '64k']);
  await ok('qemu-img', ['create', '-q', '-f', 'raw', join(at, 'raw3.img'), '64k']);
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', join(at, 'base.qcow2'), '-F', 'qcow2', join(at, 'over.qcow2')]);
}

describe('blockdev-add and blockdev-del against qemu-storage-daemon', () => {
  it.skipIf(!haveProgram('qemu-storage-daemon'))('answers a script of adds and deletes as QEMU does and lists the same named nodes', { timeout: 60_000 }, async () => {
    const theirsDir = join(dir, 'qsd');
    const oursDir = join(dir, 'ours');
    for (const d of [theirsDir, oursDir]) {
      rmSync(d, { recursive: true, force: true });
      mkdirSync(d);
      await images(d);
    }
    const qsd = await startQsd(dir, []);
    daemons.push(qsd);
    const theirs = await runScript(qsd.qmp, theirsDir);
    const ours = await startOurQmp(layer, dir);
    daemons.push(ours);
    const mine = await runScript(ours.qmp, oursDir);
    const norm = (r: typeof theirs) => JSON.stringify(r).replaceAll(theirsDir, '@').replaceAll(oursDir, '@');
    for (let i = 0; i < theirs.out.length; i++) expect(norm({ out: [mine.out[i]], named: [] }), JSON.stringify(script('@')[i])).toBe(norm({ out: [theirs.out[i]], named: [] }));
    expect(mine.named).toEqual(theirs.named);
    expect(theirs.named.map((n) => n.name)).toContain('o1f');
  });
});
