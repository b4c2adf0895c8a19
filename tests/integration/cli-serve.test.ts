import { execFile, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveQemuTools } from '../helpers/qemu-images.js';
import { type Served, serve } from '../helpers/serve-process.js';
import { makeCerts } from '../helpers/tls-certs.js';
import { haveProgram } from '../helpers/tools.js';
import { CLI } from '../helpers/cli.js';

const run = promisify(execFile);

/** Runs a command that may fail: its exit code and output. */
async function attempt(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    return { code: 0, ...(await run(cmd, args)) };
  } catch (e) {
    const x = e as { code: number; stdout?: string; stderr?: string };
    return { code: x.code, stdout: x.stdout ?? '', stderr: x.stderr ?? '' };
  }
}

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('blocklayer serve tests with qemu-img/qemu-io skipped: install qemu-utils (apt-get install qemu-utils) to run them');

let dir: string;
const p = (name: string) => path.join(dir, name);
const sha = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/** SIGTERM, then the exit code. */
async function stop(s: Served): Promise<number | null> {
  s.child.kill('SIGTERM');
  return s.exited;
}

/** Waits until the server's stderr matches (connect/disconnect lines arrive asynchronously). */
async function stderrMatches(s: Served, re: RegExp): Promise<void> {
  for (let i = 0; i < 200 && !re.test(s.stderr()); i++) await new Promise((r) => setTimeout(r, 10));
  expect(s.stderr()).toMatch(re);
}

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

type Message = Record<string, unknown> & { return?: unknown; error?: { class: string; desc: string }; event?: string };

/** A small QMP client: CRLF-framed JSON, events kept apart from responses. */
class Qmp {
  private buffer = '';
  private readonly responses: Message[] = [];
  private wake: (() => void) | null = null;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      for (let at = this.buffer.indexOf('\n'); at >= 0; at = this.buffer.indexOf('\n')) {
        const line = this.buffer.slice(0, at).trim();
        this.buffer = this.buffer.slice(at + 1);
        if (line === '') continue;
        const m = JSON.parse(line) as Message;
        if (m.event === undefined) this.responses.push(m);
      }
      this.wake?.();
    });
  }

  static async connect(file: string): Promise<Qmp> {
    const socket = net.connect(file);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const q = new Qmp(socket);
    expect(await q.next()).toHaveProperty('QMP');
    expect(await q.cmd('qmp_capabilities')).toEqual({ return: {} });
    return q;
  }

  private async next(): Promise<Message> {
    while (this.responses.length === 0) await new Promise<void>((r) => (this.wake = r));
    return this.responses.shift()!;
  }

  cmd(execute: string, args?: Record<string, unknown>): Promise<Message> {
    this.socket.write(JSON.stringify(args === undefined ? { execute } : { execute, arguments: args }));
    return this.next();
  }

  close(): void {
    this.socket.destroy();
  }
}

const size = 4 << 20;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-serve-'));
  fs.writeFileSync(p('a.raw'), randomBytes(size));
  fs.writeFileSync(p('b.raw'), randomBytes(1 << 20));
  fs.writeFileSync(p('c.raw'), randomBytes(2 << 20));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!available)('blocklayer serve with qemu-img and qemu-io as clients', () => {
  it('serves IMAGE under -x with a limit: qemu-img info shows the size, convert equals the image; one stderr line per connect and disconnect; SIGTERM exits 0', async () => {
    const s = await serve(p('a.raw'), '-x', 'disk0', '-p', '0', '--iops', '100000', '--bps', '1000000000');
    try {
      expect(s.stderr().split('\n')[0]).toMatch(/^blocklayer serve: listening on 127\.0\.0\.1:\d+, exports 'disk0'$/);
      const info = await run('qemu-img', ['info', '--output=json', `nbd://127.0.0.1:${s.port}/disk0`]);
      expect(JSON.parse(info.stdout)['virtual-size']).toBe(size);
      await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nbd://127.0.0.1:${s.port}/disk0`, p('copy.raw')]);
      expect(sha(p('copy.raw'))).toBe(sha(p('a.raw')));
      await stderrMatches(s, /blocklayer serve: 127\.0\.0\.1:\d+ connected to 'disk0'\n/);
      await stderrMatches(s, /blocklayer serve: 127\.0\.0\.1:\d+ disconnected from 'disk0'/);
    } finally {
      expect(await stop(s)).toBe(0);
    }
    expect(s.stderr()).toMatch(/SIGTERM: shutting down/);
    expect(s.stderr().trimEnd().split('\n').at(-1)).toBe('blocklayer serve: shut down');
  });

  it('--aio io_uring serves IMAGE through an io_uring ring (seen in /proc as its fd), --aio threads without one; the data is the same', async () => {
    /** Whether the serve process holds an io_uring instance (an anon inode fd named [io_uring]). */
    const hasRing = (pid: number) => fs.readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:[io_uring]';
      } catch {
        return false; // closed meanwhile
      }
    });
    for (const aio of ['io_uring', 'threads'] as const) {
      const s = await serve(p('a.raw'), '-x', 'disk', '-p', '0', '--aio', aio);
      try {
        await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nbd://127.0.0.1:${s.port}/disk`, p(`copy-${aio}.raw`)]);
        expect(sha(p(`copy-${aio}.raw`))).toBe(sha(p('a.raw')));
        // Where the kernel refuses io_uring the file driver falls back to threads and says so.
        const fellBack = /BLOCKLAYER_AIO_FALLBACK|io_uring' unavailable/.test(s.stderr());
        expect(hasRing(s.child.pid as number)).toBe(aio === 'io_uring' && !fellBack);
      } finally {
        expect(await stop(s)).toBe(0);
      }
    }
  });

  it('SIGTERM with requests in flight: they all complete, then the client is disconnected and serve exits 0', async () => {
    // 4 IOPS: eight reads take about 1.5 s, so the signal arrives while most are queued.
    const s = await serve(p('a.raw'), '-x', 'slow', '-p', '0', '--iops', '4');
    const reads = Array.from({ length: 8 }, (_, i) => ['-c', `aio_read ${i * 512}k 4k`]).flat();
    const io = attempt('qemu-io', ['-r', '-f', 'raw', ...reads, '-c', 'aio_flush', `nbd://127.0.0.1:${s.port}/slow`]);
    await stderrMatches(s, /connected to 'slow'/);
    await new Promise((r) => setTimeout(r, 300));
    expect(await stop(s)).toBe(0);
    const r = await io;
    expect(r.code).toBe(0);
    expect(r.stdout.match(/read 4096\/4096 bytes/g)).toHaveLength(8);
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/error|failed/i);
    const err = s.stderr();
    expect(err.indexOf('SIGTERM: shutting down')).toBeGreaterThan(0);
    expect(err.indexOf("disconnected from 'slow'")).toBeGreaterThan(err.indexOf('SIGTERM: shutting down'));
  });

  it('-k: a qcow2 image (format probed) over a unix socket reads back as its guest view', async () => {
    const fix = path.join(import.meta.dirname, '../fixtures/qcow2');
    const expected = JSON.parse(fs.readFileSync(path.join(fix, 'expected.json'), 'utf8')) as Record<string, string>;
    const sock = p('nbd.sock');
    const s = await serve(path.join(fix, 'zstd.qcow2'), '-r', '-x', 'q', '-k', sock);
    try {
      expect(s.stderr()).toMatch(`listening on unix:${sock}, exports 'q'`);
      await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nbd+unix:///q?socket=${sock}`, p('q.raw')]);
      expect(sha(p('q.raw'))).toBe(expected['zstd.qcow2']);
    } finally {
      expect(await stop(s)).toBe(0);
    }
  });

  it('a qcow2 image is served writable: qemu-io writes through NBD, qemu-img check stays clean', async () => {
    const img = p('w.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', img, '4M']);
    const s = await serve(img, '-x', 'w', '-p', '0');
    try {
      await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x6b 100k 300k', '-c', 'write -z 1M 64k', '-c', 'flush', `nbd://127.0.0.1:${s.port}/w`]);
    } finally {
      expect(await stop(s)).toBe(0);
    }
    const check = JSON.parse((await run('qemu-img', ['check', '--output=json', img])).stdout) as Record<string, number>;
    expect(check.corruptions ?? 0).toBe(0);
    expect(check.leaks ?? 0).toBe(0);
    const r = await run('qemu-io', ['-r', '-f', 'qcow2', '-c', 'read -P 0x6b 100k 300k', '-c', 'read -P 0 400k 100k', img]);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    expect(r.stdout).toMatch(/read 307200\/307200 bytes/);
  });

  it('-e 1: while one client is connected a second one waits (as with qemu-nbd) and is served once the first leaves; a third is refused; each gets a stderr line', async () => {
    const s = await serve(p('b.raw'), '-x', 'one', '-p', '0', '-e', '1');
    const first = net.connect(s.port, '127.0.0.1');
    try {
      // The greeting (NBDMAGIC) shows the first connection was accepted.
      await new Promise<void>((resolve) => first.once('data', () => resolve()));
      const second = attempt('qemu-img', ['info', '--output=json', `nbd://127.0.0.1:${s.port}/one`]);
      await stderrMatches(s, /blocklayer serve: 127\.0\.0\.1:\d+ waits for a free connection: 1 connections at most \(-e 1\); it is served when a client leaves\n/);
      const third = net.connect(s.port, '127.0.0.1');
      third.on('error', () => {});
      let thirdGot = 0;
      third.on('data', (d: Buffer) => {
        thirdGot += d.byteLength;
      });
      await new Promise<void>((resolve) => third.once('close', () => resolve()));
      expect(thirdGot).toBe(0);
      await stderrMatches(s, /blocklayer serve: refused a connection from 127\.0\.0\.1:\d+: 1 connections at most \(-e 1\) and 1 already waiting\n/);
      first.destroy();
      const r = await second;
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)['virtual-size']).toBe(1 << 20);
    } finally {
      first.destroy();
      expect(await stop(s)).toBe(0);
    }
  });

  it('-r: qemu-io cannot write (permission denied) and the image is unchanged; reads still work', async () => {
    const before = sha(p('b.raw'));
    const s = await serve(p('b.raw'), '-x', 'ro', '-p', '0', '-r');
    try {
      const w = await attempt('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 0 4k', `nbd://127.0.0.1:${s.port}/ro`]);
      expect(`${w.stdout}${w.stderr}`).toMatch(/Permission denied|Operation not permitted/);
      const r = await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 4k', `nbd://127.0.0.1:${s.port}/ro`]);
      expect(r.stdout).toMatch(/read 4096\/4096 bytes/);
    } finally {
      expect(await stop(s)).toBe(0);
    }
    expect(sha(p('b.raw'))).toBe(before);
  });

  it('--tls-psk: qemu-img with tls-creds-psk and the right key reads the export; a plain client and a wrong key get nothing', async () => {
    const key = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';
    const serverDir = p('psk-server');
    fs.mkdirSync(serverDir, { recursive: true });
    fs.writeFileSync(path.join(serverDir, 'keys.psk'), `alice:${key}\n`);
    const s = await serve(p('b.raw'), '-x', 'tls', '-p', '0', '--tls-psk', serverDir);
    const client = (hex: string) => {
      const d = fs.mkdtempSync(path.join(dir, 'psk-client-'));
      fs.writeFileSync(path.join(d, 'keys.psk'), `alice:${hex}\n`);
      return attempt('qemu-img', ['info', '--output=json', '--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${d},username=alice`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${s.port},export=tls,tls-creds=tls0`]);
    };
    try {
      const good = await client(key);
      expect(JSON.parse(good.stdout)['virtual-size']).toBe(fs.statSync(p('b.raw')).size);
      const plain = await attempt('qemu-img', ['info', `nbd://127.0.0.1:${s.port}/tls`]);
      expect(plain.stdout).toBe('');
      expect(plain.stderr).toMatch(/TLS/);
      const wrong = await client('00'.repeat(16));
      expect(wrong.stdout).toBe('');
    } finally {
      expect(await stop(s)).toBe(0);
    }
  });

  it('two --drive exports in one group; --qmp: block_set_io_throttle reaches query-block for both members; block-export-add/del', async () => {
    const sock = p('qmp.sock');
    const s = await serve(
      '-p',
      '0',
      '--drive',
      `file=${p('b.raw')},format=raw,id=one,iops=500,group=g1`,
      '--drive',
      `file=${p('c.raw')},id=two,iops=500,group=g1`,
      '--drive',
      `file=${p('a.raw')},readonly=on,export=ro-view`,
      '--qmp',
      `unix:${sock}`,
    );
    const q = await Qmp.connect(sock);
    try {
      expect(s.stderr()).toMatch(/exports 'one', 'two', 'ro-view', QMP on unix:/);
      const view = await run('qemu-img', ['info', '--output=json', `nbd://127.0.0.1:${s.port}/ro-view`]);
      expect(JSON.parse(view.stdout)['virtual-size']).toBe(size);
      for (const [name, bytes] of [
        ['one', 1 << 20],
        ['two', 2 << 20],
      ] as const) {
        const info = await run('qemu-img', ['info', '--output=json', `nbd://127.0.0.1:${s.port}/${name}`]);
        expect(JSON.parse(info.stdout)['virtual-size']).toBe(bytes);
      }
      const limits = { bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 };
      expect(await q.cmd('block_set_io_throttle', { ...limits, id: 'one', iops: 1234 })).toEqual({ return: {} });
      const blocks = (await q.cmd('query-block')).return as { device: string; inserted: Record<string, unknown> }[];
      // The group's limits are shared: the other member shows them too.
      expect(blocks.map((b) => [b.device, b.inserted.iops, b.inserted.group])).toEqual([
        ['one', 1234, 'g1'],
        ['two', 1234, 'g1'],
        [expect.any(String), 0, undefined],
      ]);

      const nodeName = (blocks.find((b) => b.device === 'two')!.inserted['node-name']) as string;
      expect(await q.cmd('block-export-add', { type: 'nope', id: 'f', 'node-name': nodeName })).toEqual({
        error: { class: 'GenericError', desc: "Parameter 'type' does not accept value 'nope'" },
      });
      expect(await q.cmd('block-export-add', { type: 'vhost-user-blk', id: 'v', 'node-name': nodeName })).toEqual({
        error: { class: 'GenericError', desc: 'No driver found for the requested export type' },
      });
      expect(await q.cmd('block-export-add', { type: 'nbd', id: 'e1', 'node-name': 'nope' })).toEqual({
        error: { class: 'GenericError', desc: "Cannot find device='' nor node-name='nope'" },
      });
      expect(await q.cmd('block-export-add', { type: 'nbd', id: 'e1', 'node-name': nodeName, name: 'extra', writable: true, description: 'added over QMP' })).toEqual({ return: {} });
      expect(await q.cmd('block-export-add', { type: 'nbd', id: 'e1', 'node-name': nodeName })).toEqual({
        error: { class: 'GenericError', desc: "Block export id 'e1' is already in use" },
      });
      const info = await run('qemu-img', ['info', '--output=json', `nbd://127.0.0.1:${s.port}/extra`]);
      expect(JSON.parse(info.stdout)['virtual-size']).toBe(2 << 20);
      await stderrMatches(s, /disconnected from 'extra'/);
      expect(await q.cmd('block-export-del', { id: 'e1' })).toEqual({ return: {} });
      expect(await q.cmd('block-export-del', { id: 'e1' })).toEqual({ error: { class: 'GenericError', desc: "Export 'e1' is not found" } });
      const gone = await attempt('qemu-img', ['info', `nbd://127.0.0.1:${s.port}/extra`]);
      expect(gone.code).not.toBe(0);
      expect(gone.stderr).toMatch(/extra/);
      // The drive stays served under its own export.
      const still = await run('qemu-img', ['info', '--output=json', `nbd://127.0.0.1:${s.port}/two`]);
      expect(JSON.parse(still.stdout)['virtual-size']).toBe(2 << 20);
      // quit shuts the whole daemon down, as SIGTERM does.
      expect(await q.cmd('quit')).toEqual({ return: {} });
      expect(await s.exited).toBe(0);
      expect(s.stderr()).toMatch(/QMP quit: shutting down[\s\S]*shut down\n$/);
    } finally {
      q.close();
      if (s.child.exitCode === null) s.child.kill('SIGTERM');
      await s.exited;
    }
  });
});

describe.skipIf(!haveProgram('openssl'))('blocklayer serve --tls-creds: a failed TLS handshake is logged in one line, the reason first', () => {
  it('a client that sends plain bytes after STARTTLS: one error line and one disconnect line, no OpenSSL internals', async () => {
    const creds = p('x509');
    fs.mkdirSync(creds, { recursive: true });
    makeCerts(creds);
    const s = await serve(p('b.raw'), '-x', 'tls', '-p', '0', '--tls-creds', creds);
    try {
      const c = net.connect(s.port, '127.0.0.1');
      c.on('error', () => {});
      await new Promise<void>((resolve) => c.once('data', () => resolve()));
      // Client flags, then NBD_OPT_STARTTLS; once acknowledged, bytes that are not a ClientHello.
      c.write(Buffer.from([0, 0, 0, 3, 0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54, 0, 0, 0, 5, 0, 0, 0, 0]));
      await new Promise((r) => setTimeout(r, 200));
      c.write(Buffer.alloc(64, 0x41));
      await stderrMatches(s, /disconnected \(TLS handshake failed: wrong version number \(ERR_SSL_WRONG_VERSION_NUMBER\)\)\n/);
      c.destroy();
      expect(s.stderr()).toMatch(/\nblocklayer serve: 127\.0\.0\.1:\d+: TLS handshake failed: wrong version number \(ERR_SSL_WRONG_VERSION_NUMBER\)\n/);
      // Every line is a log line of ours: no OpenSSL continuation lines or source paths.
      for (const line of s.stderr().trimEnd().split('\n')) expect(line).toMatch(/^blocklayer serve: /);
      expect(s.stderr()).not.toMatch(/deps\/openssl|SSL routines/);
    } finally {
      expect(await stop(s)).toBe(0);
    }
  });
});

describe('blocklayer serve errors: one line, exit 1', () => {
  it('--memory-budget takes a size; a bad one, or one below the largest request (32 MiB), is EINVAL naming it', () => {
    const bad = cli('serve', p('a.raw'), '-x', 'd', '-p', '0', '--memory-budget', 'lots');
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/EINVAL: --memory-budget: 'lots'/);
    const small = cli('serve', p('a.raw'), '-x', 'd', '-p', '0', '--memory-budget', '1M');
    expect(small.code).toBe(1);
    expect(small.err).toMatch(/memoryBudget: 1048576 is below maxRequest/);
  });

  it('--aio takes threads, io_uring or native (qemu-nbd\'s values); anything else is EINVAL naming it', () => {
    const bad = cli('serve', p('a.raw'), '-x', 'd', '-p', '0', '--aio', 'posix');
    expect(bad.code).toBe(1);
    expect(bad.err.trim().split('\n')).toHaveLength(1);
    expect(bad.err).toMatch(/EINVAL: --aio: 'posix' is not threads, io_uring or native/);
    // The verb's help (on stdout, as qemu-img's) names the values.
    const help = cli('serve', '--help');
    expect(help.code).toBe(0);
    expect(help.out).toMatch(/--aio threads\|io_uring /);
  });

  it('a bad limit names the flag', () => {
    const r = cli('serve', p('a.raw'), '-x', 'd', '-p', '0', '--iops=-1');
    expect(r.code).toBe(1);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(/--iops/);
    const s = cli('serve', p('a.raw'), '-x', 'd', '-p', '0', '--iops', '-1');
    expect(s.code).toBe(1);
    expect(s.err.trim().split('\n')).toHaveLength(1);
    expect(s.err).toMatch(/EINVAL: --iops: /);
    const d = cli('serve', '-p', '0', '--drive', `file=${p('a.raw')},id=x,bps_rd=-5`);
    expect(d.code).toBe(1);
    expect(d.err.trim().split('\n')).toHaveLength(1);
    expect(d.err).toMatch(/--drive '.*': Parameter 'bps_rd' expects a non-negative number/);
  });

  it('-x and --drive export=/id= with bytes that are not UTF-8: EINVAL naming the flag (NBD export names are UTF-8)', () => {
    // Through sh, so the bytes reach argv as they are (Node would encode a string as UTF-8). A serve
    // that accepted the name would keep running: the timeout ends it and the test fails.
    const sh = (tail: string) => spawnSync('/bin/sh', ['-c', `exec "$0" "$@" serve ${tail}`, process.execPath, ...CLI], { encoding: 'utf8', timeout: 30_000 });
    for (const [tail, what] of [
      [`"${p('a.raw')}" -p 0 -x "$(printf 'a\\377\\376b')"`, /EINVAL: -x\/--export-name: "a\uFFFD\uFFFDb" is not valid UTF-8/],
      [`-p 0 --drive "file=${p('a.raw')},export=$(printf '\\377')"`, /EINVAL: --drive '.*': export=: "\uFFFD" is not valid UTF-8/],
      [`-p 0 --drive "file=${p('a.raw')},id=$(printf '\\376x')"`, /EINVAL: --drive '.*': id=: "\uFFFDx" is not valid UTF-8/],
    ] as const) {
      const r = sh(tail);
      expect(r.status, r.stderr).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(what);
    }
  });

  it('--qmp and -k in a directory that does not exist: ENOENT naming the directory (libuv reports it as EACCES)', () => {
    for (const flag of [['-p', '0', '--qmp', `unix:${p('no-such-dir')}/q.sock`], ['-k', `${p('no-such-dir')}/n.sock`]]) {
      const r = cli('serve', p('a.raw'), '-x', 'd', ...flag);
      expect(r.code).toBe(1);
      expect(r.err.trim().split('\n')).toHaveLength(1);
      expect(r.err).toMatch(/^blocklayer serve: ENOENT: .*no such directory .*no-such-dir\n$/);
      expect(r.err).not.toMatch(/EACCES|permission/i);
    }
  });

  it('a missing image and a port in use', async () => {
    const r = cli('serve', p('missing.raw'), '-x', 'd', '-p', '0');
    expect(r.code).toBe(1);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(/ENOENT: .*missing\.raw: no such file/);
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    try {
      const port = (blocker.address() as net.AddressInfo).port;
      const busy = await attempt(process.execPath, [...CLI, 'serve', p('a.raw'), '-x', 'd', '-p', String(port)]);
      expect(busy.code).toBe(1);
      expect(busy.stderr.trim().split('\n')).toHaveLength(1);
      expect(busy.stderr).toMatch(/EADDRINUSE/);
    } finally {
      blocker.close();
    }
  });
});
