// `blocklayer serve --object iothread,id=… --export …,iothread=ID`: exports whose whole data path
// (the graph, NBD transmission, limits) runs in a worker thread, each connection handed over
// after the main thread's handshake. Checked with clients nobody here wrote: fio's nbd engine
// (crc32c verify, iops), nbdcopy, nbdinfo, qemu-img compare.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as P from '../../src/drivers/nbd/protocol.js';
import { RawNbdClient } from '../helpers/nbd-raw-client.js';
import { type Served, serve } from '../helpers/serve-process.js';
import { haveProgram, ok, run } from '../helpers/tools.js';
import { CLI } from '../helpers/cli.js';

const have = ['fio', 'nbdinfo', 'nbdcopy', 'qemu-img'].every(haveProgram);
if (!have) console.log('serve iothreads tests skipped: needs fio, nbdinfo, nbdcopy and qemu-img');

let dir: string;
const running: Served[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-iothreads-'));
});

afterEach(async () => {
  for (const s of running.splice(0)) {
    if (s.child.exitCode === null) s.child.kill('SIGKILL');
    await s.exited;
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Two exports, `a` (qcow2) in io0 and `b` (raw) in io1, plus `extra` args. */
async function twoExports(...extra: string[]): Promise<Served> {
  await ok('qemu-img', ['create', '-f', 'qcow2', path.join(dir, 'a.qcow2'), '32M']);
  await ok('qemu-img', ['create', '-f', 'raw', path.join(dir, 'b.raw'), '32M']);
  const s = await serve(
    '--object', 'iothread,id=io0',
    '--object', 'iothread,id=io1',
    '--blockdev', `driver=file,node-name=fa,filename=${path.join(dir, 'a.qcow2')}`,
    '--blockdev', 'driver=qcow2,node-name=a0,file=fa',
    '--blockdev', `driver=file,node-name=fb,filename=${path.join(dir, 'b.raw')}`,
    '--blockdev', 'driver=raw,node-name=b0,file=fb',
    '--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=0',
    '--export', 'type=nbd,id=ea,node-name=a0,name=a,writable=on,iothread=io0',
    '--export', 'type=nbd,id=eb,node-name=b0,name=b,writable=on,iothread=io1',
    ...extra,
  );
  running.push(s);
  return s;
}

/** fio's JSON report (its nbd engine may print a line of its own before it). */
function report<T>(out: string): T {
  return JSON.parse(out.slice(out.search(/^\{/m))) as T;
}

function fio(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn('fio', ['--output-format=json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code) => resolve({ code, out: code === 0 ? out : `${out}\n${err}` }));
  });
}

describe.skipIf(!have)('blocklayer serve with exports in iothreads', () => {
  it('fio writes with crc32c verify on two exports in two iothreads at once; nbdcopy reads match the images after a SIGTERM shutdown (qemu-img compare)', async () => {
    const s = await twoExports();
    const job = (name: string) => ['--name=w', '--ioengine=nbd', `--uri=nbd://127.0.0.1:${s.port}/${name}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=8M', '--verify=crc32c', '--do_verify=1', '--randrepeat=0', '--verify_state_save=0'];
    const [ra, rb] = await Promise.all([fio(job('a')), fio(job('b'))]);
    expect(ra.code, ra.out).toBe(0);
    expect(rb.code, rb.out).toBe(0);
    for (const r of [ra, rb]) expect(report<{ jobs: { error: number }[] }>(r.out).jobs[0]!.error).toBe(0);
    await ok('nbdcopy', [`nbd://127.0.0.1:${s.port}/a`, path.join(dir, 'a.copy')]);
    await ok('nbdcopy', [`nbd://127.0.0.1:${s.port}/b`, path.join(dir, 'b.copy')]);
    expect(s.stderr()).toMatch(/connected to 'a' \(iothread io0\)/);
    expect(s.stderr()).toMatch(/connected to 'b' \(iothread io1\)/);
    s.child.kill('SIGTERM');
    expect(await s.exited, s.stderr()).toBe(0);
    expect(s.stderr()).toMatch(/shut down/);
    // What the clients read through the iothreads is what reached the images, flushed at the end.
    expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', path.join(dir, 'a.copy'), path.join(dir, 'a.qcow2')])).code).toBe(0);
    expect((await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', path.join(dir, 'b.copy'), path.join(dir, 'b.raw')])).code).toBe(0);
    await ok('qemu-img', ['check', path.join(dir, 'a.qcow2')]);
  }, 120_000);

  it('a throttled export in an iothread holds its limit: fio randread at QD16 gets 300 IOPS within 8 %', async () => {
    await ok('qemu-img', ['create', '-f', 'raw', path.join(dir, 't.raw'), '16M']);
    const s = await serve(
      '--object', 'iothread,id=io0',
      '--object', 'throttle-group,id=g0,x-iops-total=300',
      '--blockdev', `driver=file,node-name=ft,filename=${path.join(dir, 't.raw')}`,
      '--blockdev', 'driver=throttle,node-name=t0,throttle-group=g0,file=ft',
      '--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=0',
      '--export', 'type=nbd,id=et,node-name=t0,name=t,iothread=io0',
    );
    running.push(s);
    const r = await fio(['--name=r', '--ioengine=nbd', `--uri=nbd://127.0.0.1:${s.port}/t`, '--rw=randread', '--bs=4k', '--iodepth=16', '--runtime=4', '--time_based']);
    expect(r.code, r.out).toBe(0);
    const iops = report<{ jobs: { read: { iops: number } }[] }>(r.out).jobs[0]!.read.iops;
    console.log(`throttled export in iothread io0: ${iops.toFixed(1)} IOPS (limit 300)`);
    // The bucket's burst (one second's worth) lets the first second run above the limit.
    expect(iops).toBeGreaterThan(300 * 0.92);
    expect(iops).toBeLessThan(300 * 1.08 + 300 / 4);
  }, 60_000);

  it('a hostile client (garbage right after EXPORT_NAME, in the same packet) is dropped in the iothread; the process and the export go on', async () => {
    const s = await twoExports();
    const c = await RawNbdClient.connect(s.port);
    await c.read(18);
    const name = Buffer.from('a');
    const opt = Buffer.alloc(16);
    opt.writeBigUInt64BE(P.NBD_OPTS_MAGIC, 0);
    opt.writeUInt32BE(P.NBD_OPT_EXPORT_NAME, 8);
    opt.writeUInt32BE(name.byteLength, 12);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES);
    c.write(Buffer.concat([flags, opt, name, Buffer.alloc(100, 0xee)]));
    await c.closed;
    expect(s.child.exitCode).toBeNull();
    const info = JSON.parse(await ok('nbdinfo', ['--json', `nbd://127.0.0.1:${s.port}/a`])) as { exports: { 'export-size': number }[] };
    expect(info.exports[0]!['export-size']).toBe(32 * 1024 * 1024);
    expect(s.stderr()).toMatch(/magic|request/i);
  }, 60_000);

  it('refuses a throttle group whose members would live in two threads, naming the group and the threads', async () => {
    await ok('qemu-img', ['create', '-f', 'raw', path.join(dir, 'x.raw'), '1M']);
    await ok('qemu-img', ['create', '-f', 'raw', path.join(dir, 'y.raw'), '1M']);
    const r = await run(process.execPath, [
      ...CLI, 'serve',
      '--object', 'iothread,id=io0',
      '--object', 'iothread,id=io1',
      '--object', 'throttle-group,id=g0,x-iops-total=100',
      '--blockdev', `driver=file,node-name=fx,filename=${path.join(dir, 'x.raw')}`,
      '--blockdev', 'driver=throttle,node-name=tx,throttle-group=g0,file=fx',
      '--blockdev', `driver=file,node-name=fy,filename=${path.join(dir, 'y.raw')}`,
      '--blockdev', 'driver=throttle,node-name=ty,throttle-group=g0,file=fy',
      '--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=0',
      '--export', 'type=nbd,id=ex,node-name=tx,iothread=io0',
      '--export', 'type=nbd,id=ey,node-name=ty,iothread=io1',
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/throttle group 'g0' has members in iothread io0 and iothread io1/);
  }, 60_000);
});
