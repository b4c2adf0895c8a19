// Cases scripts/fuzz-serve.ts found against a live `blocklayer serve`, each cut down to the few
// messages that show it, with the reply QEMU (qemu-storage-daemon 7.2) gives.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createImage, type ImageInfo, imageInfo } from '../../src/index.js';
import { type Served, serve } from '../helpers/serve-process.js';

type Reply = { return?: unknown; error?: { class: string; desc: string } };

/** QMP over raw lines: what is sent is exactly what the test writes. */
class Lines {
  private buffer = '';
  private readonly replies: Reply[] = [];
  private waiter: (() => void) | null = null;
  closed = false;
  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buffer += d;
      for (let at = this.buffer.indexOf('\n'); at >= 0; at = this.buffer.indexOf('\n')) {
        const m = JSON.parse(this.buffer.slice(0, at)) as Reply & { event?: string; QMP?: unknown };
        this.buffer = this.buffer.slice(at + 1);
        if (m.event === undefined && m.QMP === undefined) this.replies.push(m);
      }
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }
  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }
  static async connect(file: string): Promise<Lines> {
    const s = net.connect(file);
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    const q = new Lines(s);
    expect(await q.send('{"execute":"qmp_capabilities"}')).toEqual({ return: {} });
    return q;
  }
  async send(line: string): Promise<Reply> {
    this.socket.write(`${line}\n`);
    while (this.replies.length === 0) {
      if (this.closed) throw new Error(`connection closed after ${line}`);
      await new Promise<void>((r) => (this.waiter = r));
    }
    return this.replies.shift()!;
  }
  cmd(execute: string, args?: Record<string, unknown>): Promise<Reply> {
    return this.send(JSON.stringify(args === undefined ? { execute } : { execute, arguments: args }));
  }
  close(): void {
    this.socket.destroy();
  }
}

let dir: string;
let served: Served | undefined;
let qmp: Lines | undefined;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'serve-fuzz-'));
});

afterEach(async () => {
  qmp?.close();
  qmp = undefined;
  if (served) {
    served.child.kill('SIGKILL');
    await served.exited;
    served = undefined;
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A new 1 MiB qcow2 image (our creator: these tests run where qemu-img is not installed too). */
const qcow2 = (file: string) => createImage(file, { format: 'qcow2', size: 1 << 20 });

/** `blocklayer serve` on a 1 MiB qcow2 image d0 (and `extra` arguments), with a QMP monitor. */
async function start(...extra: string[]): Promise<Lines> {
  await qcow2(path.join(dir, 'd0.qcow2'));
  const sock = path.join(dir, 'qmp.sock');
  served = await serve('-k', path.join(dir, 'nbd.sock'), '--qmp', `unix:${sock}`, '--drive', `file=${path.join(dir, 'd0.qcow2')},format=qcow2,id=d0`, ...extra);
  qmp = await Lines.connect(sock);
  return qmp;
}

describe('QMP input', () => {
  it('refuses a JSON object with a member twice (the last one is not run): "JSON parse error, duplicate key"', async () => {
    const q = await start();
    const dup = { error: { class: 'GenericError', desc: 'JSON parse error, duplicate key' } };
    expect(await q.send('{"execute":"query-block","execute":"quit"}')).toEqual(dup);
    expect(await q.send('{"execute":"block_resize","arguments":{"device":"d0","size":2097152,"size":512}}')).toEqual(dup);
    // Names are compared decoded; the same name in two objects is no duplicate.
    expect(await q.send('{"execute":"query-block","\\u0065xecute":"quit"}')).toEqual(dup);
    expect(await q.send('{"execute":"query-named-block-nodes","arguments":{"flat":true},"id":{"flat":1}}')).toMatchObject({ return: expect.any(Array) });
    expect(await q.cmd('query-block')).toMatchObject({ return: [{ device: 'd0' }] });
    expect(served!.child.exitCode).toBe(null);
  });
});

describe('block_resize', () => {
  it('resizes a node added with blockdev-add (not under a drive), as QEMU; its file child stays refused', async () => {
    const q = await start();
    const t0 = path.join(dir, 't0.qcow2');
    await qcow2(t0);
    expect(await q.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'n0', file: { driver: 'file', filename: t0, 'node-name': 'f0' } })).toEqual({ return: {} });
    expect(await q.cmd('block_resize', { 'node-name': 'n0', size: 2 << 20 })).toEqual({ return: {} });
    expect(await q.cmd('block_resize', { 'node-name': 'f0', size: 4 << 20 })).toEqual({
      error: {
        class: 'GenericError',
        desc: "Permission conflict on node 'f0': permissions 'resize' are both required by an unnamed block device (uses node 'f0' as 'root' child) and unshared by node 'n0' (uses node 'f0' as 'file' child).",
      },
    });
    expect(await q.cmd('block_resize', { 'node-name': 'nope', size: 2 << 20 })).toEqual({ error: { class: 'GenericError', desc: "Cannot find device='' nor node-name='nope'" } });
    const nodes = (await q.cmd('query-named-block-nodes')).return as { 'node-name': string; image: { 'virtual-size': number } }[];
    expect(nodes.find((n) => n['node-name'] === 'n0')?.image['virtual-size']).toBe(2 << 20);
    const info = (await imageInfo(t0, { forceShare: true })) as ImageInfo;
    expect(info['virtual-size']).toBe(2 << 20);
  });
});

describe('block_resize during a mirror', () => {
  it("refuses to resize a running mirror's source or target, as QEMU's op blocker: \"Device '…' is in use\"", async () => {
    const q = await start();
    const t0 = path.join(dir, 't0.qcow2');
    await qcow2(t0);
    expect(await q.cmd('blockdev-add', { driver: 'qcow2', 'node-name': 'n0', file: { driver: 'file', filename: t0 } })).toEqual({ return: {} });
    // One byte a second: the job is still running when the resizes come.
    expect(await q.cmd('blockdev-mirror', { 'job-id': 'j0', device: 'd0', target: 'n0', sync: 'full', speed: 1 })).toEqual({ return: {} });
    expect(await q.cmd('block_resize', { device: 'd0', size: 2 << 20 })).toEqual({ error: { class: 'GenericError', desc: "Device 'd0' is in use" } });
    expect(await q.cmd('block_resize', { 'node-name': 'n0', size: 2 << 20 })).toEqual({ error: { class: 'GenericError', desc: "Device '(null)' is in use" } });
    const nodes = (await q.cmd('query-named-block-nodes')).return as { 'node-name': string; image: { 'virtual-size': number } }[];
    expect(nodes.find((n) => n['node-name'] === 'n0')?.image['virtual-size']).toBe(1 << 20);
    expect(await q.cmd('job-cancel', { id: 'j0' })).toEqual({ return: {} });
  });
});

describe('jobs on a running mirror', () => {
  it("refuses a stream or backup on a running mirror's source or target, as QEMU's op blockers", async () => {
    const q = await start();
    for (const name of ['t0', 't1']) await qcow2(path.join(dir, `${name}.qcow2`));
    for (const name of ['t0', 't1']) {
      expect(await q.cmd('blockdev-add', { driver: 'qcow2', 'node-name': `n${name[1]}`, file: { driver: 'file', filename: path.join(dir, `${name}.qcow2`) } })).toEqual({ return: {} });
    }
    const busy = (node: string) => ({ error: { class: 'GenericError', desc: `Node '${node}' is busy: block device is in use by block job: mirror` } });
    expect(await q.cmd('blockdev-mirror', { 'job-id': 'j0', device: 'n0', target: 'n1', sync: 'full', speed: 1 })).toEqual({ return: {} });
    expect(await q.cmd('block-stream', { 'job-id': 'j1', device: 'n1' })).toEqual(busy('n1'));
    expect(await q.cmd('blockdev-backup', { 'job-id': 'j2', device: 'n1', target: 'd0', sync: 'full' })).toEqual(busy('n1'));
    expect(await q.cmd('blockdev-backup', { 'job-id': 'j3', device: 'd0', target: 'n1', sync: 'full' })).toEqual(busy('n1'));
    expect(((await q.cmd('query-jobs')).return as { id: string }[]).map((j) => j.id)).toEqual(['j0']);
    expect(await q.cmd('job-cancel', { id: 'j0' })).toEqual({ return: {} });
  });
});

describe('backup into a parent of its source', () => {
  it("refuses a backup whose target is above its source (QEMU's permission conflict); a write to that node hung forever", async () => {
    const raw = path.join(dir, 'r.raw');
    fs.writeFileSync(raw, Buffer.alloc(1 << 20));
    const q = await start();
    expect(await q.cmd('blockdev-add', { driver: 'raw', 'node-name': 'r', file: { driver: 'file', filename: raw, 'node-name': 'rf' } })).toEqual({ return: {} });
    expect(await q.cmd('blockdev-backup', { 'job-id': 'j0', device: 'rf', target: 'r', sync: 'none', 'filter-node-name': 'cbw' })).toEqual({
      error: {
        class: 'GenericError',
        desc: "Permission conflict on node 'rf': permissions 'write' are both required by node 'r' (uses node 'rf' as 'file' child) and unshared by node 'cbw' (uses node 'rf' as 'file' child).",
      },
    });
    expect((await q.cmd('query-jobs')).return).toEqual([]);
    // Nothing of the refused job is left on the nodes.
    expect(await q.cmd('block-export-add', { type: 'nbd', id: 'er', 'node-name': 'r', writable: true })).toEqual({ return: {} });
    expect(await q.cmd('block_resize', { 'node-name': 'r', size: 2 << 20 })).toEqual({ return: {} });
  });
});
