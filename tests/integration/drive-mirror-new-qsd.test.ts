// drive-mirror onto a new image over the source's backing chain (sync top: the source's backing;
// sync none: the source itself), against qemu-storage-daemon: the same replies and events, new
// images qemu-img finds equal, naming the same backing file and format, with the same layer of
// their own; in our layer a drive on the source is moved to the new image and reads the same
// guest view through the shared chain.
import { cpSync, mkdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg as img, qemuIo as io } from '../helpers/qemu-images.js';
import { type QmpClient, type QmpEvent, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { haveQsdTools, qsdSuite } from '../helpers/qsd-suite.js';

const can = haveQsdTools;
const SIZE = 8 << 20;
const suite = qsdSuite('drive-mirror-new-');


/** base ← mid ← top (relative backing names, so a copy of the directory stands alone); top has a zero cluster over mid's data. */
function makeChain(at: string): void {
  mkdirSync(at, { recursive: true });
  const p = (n: string) => join(at, `${n}.qcow2`);
  img('create', '-q', '-f', 'qcow2', p('base'), String(SIZE));
  io(p('base'), ['write -P 0x11 0 4M']);
  img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', p('mid'));
  io(p('mid'), ['write -P 0x22 1M 2M']);
  img('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', p('top'));
  io(p('top'), ['write -P 0x33 2560k 1M', 'write -z 1M 64k', 'write -P 0x44 7M 64k']);
}

type Step = { cmd: string; args: Record<string, unknown>; ready?: string; gone?: string };

async function runScript(qmp: QmpClient, steps: Step[]): Promise<{ replies: unknown[]; events: QmpEvent[] }> {
  const from = qmp.events.length;
  const replies: unknown[] = [];
  for (const s of steps) {
    replies.push(await qmp.cmd(s.cmd, s.args));
    if (s.ready) await qmp.waitEvent('BLOCK_JOB_READY', (d) => d.device === s.ready, 60_000, from);
    if (s.gone) await qmp.waitEvent('JOB_STATUS_CHANGE', (d) => d.id === s.gone && d.status === 'null', 60_000, from);
  }
  return { replies, events: qmp.events.slice(from) };
}

/** The guest view of an image as raw bytes (qemu-img convert through its chain). */
function guestView(image: string): Buffer {
  const out = join(suite.dir, `view-${basename(image)}.raw`);
  img('convert', '-O', 'raw', image, out);
  return readFileSync(out);
}

/** What qemu-img map shows the image holds itself (depth 0): [start, length, zero]. */
function ownLayer(image: string): [number, number, boolean][] {
  const map = JSON.parse(img('map', '--output=json', image)) as { start: number; length: number; depth: number; zero: boolean }[];
  return map.filter((e) => e.depth === 0).map((e) => [e.start, e.length, e.zero]);
}

function backingOf(image: string): string {
  const info = JSON.parse(img('info', '--output=json', image)) as { 'backing-filename'?: string; 'backing-filename-format'?: string };
  return `${basename(info['backing-filename'] ?? '-')}:${info['backing-filename-format'] ?? '-'}`;
}

/**
 * The same script for QSD and for us, each on its own copy of the chain (opened from the top
 * image, its backing chain from the header). Ours has a drive on `top`, which the pivot moves.
 */
async function both(steps: (at: string) => Step[]) {
  const orig = join(suite.dir, 'orig');
  makeChain(orig);
  const theirsDir = join(suite.dir, 'qsd');
  const oursDir = join(suite.dir, 'ours');
  cpSync(orig, theirsDir, { recursive: true });
  cpSync(orig, oursDir, { recursive: true });
  const qsd = await startQsd(suite.dir, ['--blockdev', `driver=qcow2,node-name=top,file.driver=file,file.node-name=top-file,file.filename=${join(theirsDir, 'top.qcow2')}`]);
  suite.daemons.push(qsd);
  const theirs = await runScript(qsd.qmp, steps(theirsDir));
  await qsd.stop();
  suite.daemons.splice(suite.daemons.indexOf(qsd), 1);
  await suite.layer.addNode({ driver: 'qcow2', nodeName: 'top', file: { driver: 'file', nodeName: 'top-file', filename: join(oursDir, 'top.qcow2') } });
  const drive = suite.layer.attachDrive('top', { id: 'disk0' });
  const ours = await startOurQmp(suite.layer, suite.dir);
  suite.daemons.push(ours);
  const mine = await runScript(ours.qmp, steps(oursDir));
  const view = new Uint8Array(SIZE);
  await drive.read(0, view);
  await ours.stop();
  suite.daemons.splice(suite.daemons.indexOf(ours), 1);
  return { theirs, mine, theirsDir, oursDir, drive, view: Buffer.from(view), orig };
}

describe.skipIf(!can)('drive-mirror onto a new image over the source chain, against qemu-storage-daemon', () => {
  it('sync top: the new qcow2 names the source backing, holds only the top; the drive moves and reads the same view', { timeout: 120_000 }, async () => {
    const r = await both((at) => [
      { cmd: 'drive-mirror', args: { 'job-id': 'm', device: 'top', target: join(at, 'new.qcow2'), sync: 'top', format: 'qcow2' }, ready: 'm' },
      { cmd: 'job-complete', args: { id: 'm' }, gone: 'm' },
    ]);
    expect(r.mine).toEqual(r.theirs);
    expect(r.drive.node.name).not.toBe('top');
    await suite.layer.close();
    const [theirs, ours] = [join(r.theirsDir, 'new.qcow2'), join(r.oursDir, 'new.qcow2')];
    expect(backingOf(theirs)).toBe('mid.qcow2:qcow2');
    expect(backingOf(ours)).toBe(backingOf(theirs));
    expect(ownLayer(ours)).toEqual(ownLayer(theirs));
    expect(ownLayer(ours)).toEqual(ownLayer(join(r.orig, 'top.qcow2')));
    expect(guestView(ours).equals(guestView(join(r.orig, 'top.qcow2')))).toBe(true);
    expect(guestView(theirs).equals(guestView(ours))).toBe(true);
    expect(r.view.equals(guestView(join(r.orig, 'top.qcow2')))).toBe(true);
    img('check', '-q', ours);
  });

  it('sync none: the new qcow2 names the source itself, holds nothing of its own; the drive reads through to the source', { timeout: 120_000 }, async () => {
    const r = await both((at) => [
      { cmd: 'drive-mirror', args: { 'job-id': 'n', device: 'top', target: join(at, 'new.qcow2'), sync: 'none', mode: 'absolute-paths' }, ready: 'n' },
      { cmd: 'job-complete', args: { id: 'n' }, gone: 'n' },
    ]);
    expect(r.mine).toEqual(r.theirs);
    expect(r.view.equals(guestView(join(r.orig, 'top.qcow2')))).toBe(true);
    // New writes land in the new image, not in the source.
    await r.drive.write(0, new Uint8Array(65536).fill(0x55));
    await r.drive.flush();
    await suite.layer.close();
    const [theirs, ours] = [join(r.theirsDir, 'new.qcow2'), join(r.oursDir, 'new.qcow2')];
    expect(backingOf(theirs)).toBe('top.qcow2:qcow2');
    expect(backingOf(ours)).toBe(backingOf(theirs));
    expect(ownLayer(theirs)).toEqual([]);
    expect(ownLayer(ours)).toEqual([[0, 65536, false]]);
    expect(guestView(ours).subarray(0, 65536).every((b) => b === 0x55)).toBe(true);
    expect(guestView(join(r.oursDir, 'top.qcow2')).equals(guestView(join(r.orig, 'top.qcow2')))).toBe(true);
  });

  it('refuses a raw image over a chain, a device below a node, as QEMU; sync full still makes a standalone image', { timeout: 120_000 }, async () => {
    const r = await both((at) => [
      { cmd: 'drive-mirror', args: { 'job-id': 'e', device: 'top', target: join(at, 'new.raw'), sync: 'none', format: 'raw' } },
      { cmd: 'drive-mirror', args: { 'job-id': 'e', device: 'top-file', target: join(at, 'new.qcow2'), sync: 'top', format: 'qcow2' } },
      { cmd: 'drive-mirror', args: { 'job-id': 'f', device: 'top', target: join(at, 'full.qcow2'), sync: 'full', format: 'qcow2' }, ready: 'f' },
      { cmd: 'job-cancel', args: { id: 'f' }, gone: 'f' },
    ]);
    expect(r.mine).toEqual(r.theirs);
    await suite.layer.close();
    expect(r.theirs.replies.slice(0, 2)).toEqual([
      { error: { class: 'GenericError', desc: "Backing file not supported for file format 'raw'" } },
      { error: { class: 'GenericError', desc: 'Need a root block node' } },
    ]);
    expect(backingOf(join(r.oursDir, 'full.qcow2'))).toBe('-:-');
    expect(guestView(join(r.oursDir, 'full.qcow2')).equals(guestView(join(r.theirsDir, 'full.qcow2')))).toBe(true);
  });
});
