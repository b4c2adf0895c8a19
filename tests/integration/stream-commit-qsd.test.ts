// block-stream and block-commit (intermediate and active) against qemu-storage-daemon: the same
// QMP script on the same three-layer qcow2 chain made by qemu-img and qemu-io (a copy each),
// the same events (JOB_STATUS_CHANGE sequence, BLOCK_JOB_READY/COMPLETED data), the same
// argument errors, and images qemu-img finds equal, clean and pointing at the same backing file.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { BlockNode } from '../../src/node/node.js';
import { qemuImg as img, qemuIo as io } from '../helpers/qemu-images.js';
import { type QmpClient, type QmpEvent, startOurQmp, startQsd } from '../helpers/qmp-client.js';
import { haveQsdTools, qsdSuite } from '../helpers/qsd-suite.js';

const can = haveQsdTools;
const suite = qsdSuite('stream-commit-');


/** base ← mid ← top (8 MiB, 64 KiB clusters) in `at`: data at every level, mid's zeroes over base data. */
function makeChain(at: string): void {
  mkdirSync(at, { recursive: true });
  const p = (n: string) => join(at, `${n}.qcow2`);
  img('create', '-q', '-f', 'qcow2', p('base'), '8M');
  io(p('base'), ['write -P 0x11 0 2M', 'write -P 0x44 5M 1M']);
  img('create', '-q', '-f', 'qcow2', '-b', p('base'), '-F', 'qcow2', p('mid'));
  io(p('mid'), ['write -P 0x22 1M 2M', 'write -z 5M 512k']);
  img('create', '-q', '-f', 'qcow2', '-b', p('mid'), '-F', 'qcow2', p('top'));
  io(p('top'), ['write -P 0x33 2560k 1M']);
}

/** The chain as qemu-storage-daemon takes it: one --blockdev per file and per image, backing by node name. */
function qsdChain(at: string): string[] {
  const args: string[] = [];
  for (const [n, backing] of [['base', 'null'], ['mid', 'base'], ['top', 'mid']]) {
    args.push('--blockdev', `driver=file,node-name=${n}-file,filename=${join(at, `${n}.qcow2`)}`);
    args.push('--blockdev', `driver=qcow2,node-name=${n},file=${n}-file${backing === 'null' ? '' : `,backing=${backing}`}`);
  }
  return args;
}

/** The same chain opened in our layer (nodes the layer keeps by name, as blockdev-add would). */
async function ourChain(at: string): Promise<void> {
  let below: BlockNode | null = null;
  for (const n of ['base', 'mid', 'top']) {
    const file = await suite.layer.addNode({ driver: 'file', nodeName: `${n}-file`, filename: join(at, `${n}.qcow2`) });
    below = await suite.layer.addNode({ driver: 'qcow2', nodeName: n, file, backing: below });
  }
}

/** Events from `from` on as {event, data}, without timestamps. */
function eventsFrom(qmp: QmpClient, from: number): QmpEvent[] {
  return qmp.events.slice(from).map((e) => ({ event: e.event, ...(e.data ? { data: e.data } : {}) }));
}

type Step = { cmd: string; args: Record<string, unknown>; until?: { id: string; status: string }; waitReady?: string };

/** Runs `steps` and returns each reply and the events the script caused. */
async function runScript(qmp: QmpClient, steps: Step[]): Promise<{ replies: unknown[]; events: QmpEvent[] }> {
  const from = qmp.events.length;
  const replies: unknown[] = [];
  for (const s of steps) {
    replies.push(await qmp.cmd(s.cmd, s.args));
    if (s.waitReady) await qmp.waitEvent('BLOCK_JOB_READY', (d) => d.device === s.waitReady, 60_000, from);
    if (s.until) await qmp.waitEvent('JOB_STATUS_CHANGE', (d) => d.id === s.until!.id && d.status === s.until!.status, 60_000, from);
  }
  return { replies, events: eventsFrom(qmp, from) };
}

/** The same script on a fresh chain for QSD and for us; returns both results and the two directories. */
async function both(steps: Step[]) {
  const orig = join(suite.dir, 'orig');
  makeChain(orig);
  const theirsDir = join(suite.dir, 'qsd');
  const oursDir = join(suite.dir, 'ours');
  cpSync(orig, theirsDir, { recursive: true });
  cpSync(orig, oursDir, { recursive: true });
  const qsd = await startQsd(suite.dir, qsdChain(theirsDir));
  suite.daemons.push(qsd);
  const theirs = await runScript(qsd.qmp, steps);
  await qsd.stop();
  suite.daemons.splice(suite.daemons.indexOf(qsd), 1);
  await ourChain(oursDir);
  const ours = await startOurQmp(suite.layer, suite.dir);
  suite.daemons.push(ours);
  const mine = await runScript(ours.qmp, steps);
  await ours.stop();
  suite.daemons.splice(suite.daemons.indexOf(ours), 1);
  await suite.layer.close();
  return { theirs, mine, orig, theirsDir, oursDir };
}

/** qemu-img info's backing file of an image, by its base name (the directories differ). */
function backingOf(image: string): string | undefined {
  const info = JSON.parse(img('info', '--output=json', image)) as { 'backing-filename'?: string; 'backing-filename-format'?: string };
  return info['backing-filename'] === undefined ? undefined : `${basename(info['backing-filename'])}:${info['backing-filename-format']}`;
}

/** qemu-img compare's exit status (0: same guest view). */
function compare(a: string, b: string): number {
  try {
    execFileSync('qemu-img', ['compare', '-q', a, b]);
    return 0;
  } catch (e) {
    return (e as { status: number }).status;
  }
}

function checkClean(image: string): void {
  execFileSync('qemu-img', ['check', '-q', image]);
}

const FINISH = (id: string) => ({ id, status: 'null' });

describe.skipIf(!can)('block-stream / block-commit against qemu-storage-daemon', () => {
  it('block-stream with base-node: same events, top points at base, same guest view', { timeout: 120_000 }, async () => {
    const r = await both([{ cmd: 'block-stream', args: { 'job-id': 's0', device: 'top', 'base-node': 'base' }, until: FINISH('s0') }]);
    expect(r.mine).toEqual(r.theirs);
    expect(r.theirs.events.map((e) => (e.event === 'JOB_STATUS_CHANGE' ? e.data?.status : e.event))).toEqual([
      'created',
      'running',
      'waiting',
      'pending',
      'BLOCK_JOB_COMPLETED',
      'concluded',
      'null',
    ]);
    for (const at of [r.theirsDir, r.oursDir]) {
      expect(backingOf(join(at, 'top.qcow2'))).toBe('base.qcow2:qcow2');
      checkClean(join(at, 'top.qcow2'));
      expect(compare(join(r.orig, 'top.qcow2'), join(at, 'top.qcow2'))).toBe(0);
    }
    // The same clusters were copied: the images map alike.
    expect(img('map', '--output=json', join(r.oursDir, 'top.qcow2')).replaceAll(r.oursDir, '')).toBe(img('map', '--output=json', join(r.theirsDir, 'top.qcow2')).replaceAll(r.theirsDir, ''));
  });

  it('block-stream of the whole chain: top stands alone', { timeout: 120_000 }, async () => {
    const r = await both([{ cmd: 'block-stream', args: { 'job-id': 's1', device: 'top' }, until: FINISH('s1') }]);
    expect(r.mine).toEqual(r.theirs);
    for (const at of [r.theirsDir, r.oursDir]) {
      expect(backingOf(join(at, 'top.qcow2'))).toBeUndefined();
      checkClean(join(at, 'top.qcow2'));
      expect(compare(join(r.orig, 'top.qcow2'), join(at, 'top.qcow2'))).toBe(0);
    }
  });

  it('block-commit of mid into base: same events, top points at base, base holds mid’s view', { timeout: 120_000 }, async () => {
    const r = await both([{ cmd: 'block-commit', args: { 'job-id': 'c0', device: 'top', 'top-node': 'mid', 'base-node': 'base' }, until: FINISH('c0') }]);
    expect(r.mine).toEqual(r.theirs);
    expect(r.theirs.events.some((e) => e.event === 'BLOCK_JOB_COMPLETED')).toBe(true);
    for (const at of [r.theirsDir, r.oursDir]) {
      expect(backingOf(join(at, 'top.qcow2'))).toBe('base.qcow2:qcow2');
      for (const n of ['top', 'base']) checkClean(join(at, `${n}.qcow2`));
      expect(compare(join(r.orig, 'top.qcow2'), join(at, 'top.qcow2'))).toBe(0);
      expect(compare(join(r.orig, 'mid.qcow2'), join(at, 'base.qcow2'))).toBe(0);
    }
  });

  it('active block-commit: READY, job-complete, base holds top’s view; same events', { timeout: 120_000 }, async () => {
    const r = await both([
      { cmd: 'block-commit', args: { 'job-id': 'a0', device: 'top', 'base-node': 'base' }, waitReady: 'a0' },
      { cmd: 'query-block-jobs', args: {} },
      { cmd: 'job-complete', args: { id: 'a0' }, until: FINISH('a0') },
    ]);
    expect(r.mine.events).toEqual(r.theirs.events);
    expect(r.mine.replies).toEqual(r.theirs.replies);
    expect(r.theirs.events.filter((e) => e.event === 'JOB_STATUS_CHANGE').map((e) => e.data?.status)).toEqual(['created', 'running', 'ready', 'waiting', 'pending', 'concluded', 'null']);
    for (const at of [r.theirsDir, r.oursDir]) {
      checkClean(join(at, 'base.qcow2'));
      expect(compare(join(r.orig, 'top.qcow2'), join(at, 'base.qcow2'))).toBe(0);
    }
  });

  it('block-stream with auto-finalize and auto-dismiss off: PENDING, job-finalize, CONCLUDED, job-dismiss; same events and replies', { timeout: 120_000 }, async () => {
    const r = await both([
      { cmd: 'block-stream', args: { 'job-id': 'm0', device: 'top', 'base-node': 'mid', 'auto-finalize': false, 'auto-dismiss': false, speed: 1 << 30 }, until: { id: 'm0', status: 'pending' } },
      { cmd: 'query-jobs', args: {} },
      { cmd: 'job-finalize', args: { id: 'm0' }, until: { id: 'm0', status: 'concluded' } },
      { cmd: 'query-block-jobs', args: {} },
      { cmd: 'job-dismiss', args: { id: 'm0' }, until: FINISH('m0') },
    ]);
    expect(r.mine).toEqual(r.theirs);
    expect(r.theirs.events.some((e) => e.event === 'BLOCK_JOB_PENDING')).toBe(true);
  });

  it('refuses bad arguments with the same error classes and texts', { timeout: 120_000 }, async () => {
    const bad: Step[] = [
      { cmd: 'block-stream', args: { device: 'top' } },
      { cmd: 'block-stream', args: { 'job-id': 'x', device: 'nope' } },
      { cmd: 'block-stream', args: { 'job-id': 'x', device: 'top', base: 'a', 'base-node': 'base' } },
      { cmd: 'block-stream', args: { 'job-id': 'x', device: 'top', 'base-node': 'top' } },
      { cmd: 'block-stream', args: { 'job-id': 'x', device: 'top', 'base-node': 'nope' } },
      { cmd: 'block-stream', args: { 'job-id': 'x', device: 'top', base: 'nowhere.qcow2' } },
      { cmd: 'block-stream', args: { 'job-id': 'x', device: 'top', 'backing-file': 'b' } },
      { cmd: 'block-stream', args: { 'job-id': 'x', device: 'top', bottom: 'nope' } },
      { cmd: 'block-stream', args: { 'job-id': 'x', device: 'top', speed: 'fast' } },
      { cmd: 'block-stream', args: { 'job-id': 'x', device: 'top', 'on-error': 'explode' } },
      { cmd: 'block-stream', args: { 'job-id': 'x', device: 'top', unknown: 1 } },
      { cmd: 'block-stream', args: { 'job-id': 'x' } },
      { cmd: 'block-commit', args: { 'job-id': 'x', device: 'nope' } },
      { cmd: 'block-commit', args: { 'job-id': 'x', device: 'top', top: 'a', 'top-node': 'mid' } },
      { cmd: 'block-commit', args: { 'job-id': 'x', device: 'top', 'base-node': 'base', base: 'b' } },
      { cmd: 'block-commit', args: { 'job-id': 'x', device: 'top', 'top-node': 'base', 'base-node': 'base' } },
      { cmd: 'block-commit', args: { 'job-id': 'x', device: 'top', 'top-node': 'mid', 'base-node': 'top' } },
      { cmd: 'block-commit', args: { 'job-id': 'x', device: 'top', base: 'nowhere' } },
      { cmd: 'block-commit', args: { 'job-id': 'x', device: 'top', top: 'nowhere' } },
      { cmd: 'block-commit', args: { 'job-id': 'x', device: 'top', 'backing-file': 'b' } },
      { cmd: 'block-commit', args: { 'job-id': 'x', device: 'base' } },
      { cmd: 'block-commit', args: { device: 'top' } },
      { cmd: 'query-block-jobs', args: {} },
    ];
    const r = await both(bad);
    expect(r.mine.replies).toEqual(r.theirs.replies);
    expect(r.mine.events).toEqual(r.theirs.events);
  });
});
