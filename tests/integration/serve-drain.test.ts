import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as P from '../../src/drivers/nbd/protocol.js';
import { RawNbdClient } from '../helpers/nbd-raw-client.js';
import { haveQemuTools } from '../helpers/qemu-images.js';
import { serve } from '../helpers/serve-process.js';

const run = promisify(execFile);

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
if (!available) console.log('blocklayer serve drain tests skipped: install qemu-utils (apt-get install qemu-utils) to run them');

const KiB = 1024;
const WRITES = 8;
const CHUNK = 64 * KiB;

let dir: string;
const p = (name: string) => path.join(dir, name);

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-serve-drain-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Resolves with `value`, or with 'timeout' after `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([promise, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)))]).finally(() => clearTimeout(timer));
}

/** A minimal QMP client: greeting, qmp_capabilities, then one command at a time (events skipped). */
async function qmpConnect(file: string) {
  const socket = net.connect(file);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.on('error', () => {});
  socket.setEncoding('utf8');
  let buffer = '';
  const messages: Record<string, unknown>[] = [];
  let wake: (() => void) | null = null;
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    for (let at = buffer.indexOf('\n'); at >= 0; at = buffer.indexOf('\n')) {
      const line = buffer.slice(0, at).trim();
      buffer = buffer.slice(at + 1);
      if (line !== '') {
        const m = JSON.parse(line) as Record<string, unknown>;
        if (m.event === undefined) messages.push(m);
      }
    }
    wake?.();
  });
  const next = async () => {
    while (messages.length === 0) await new Promise<void>((r) => (wake = r));
    return messages.shift()!;
  };
  const cmd = (execute: string, args?: Record<string, unknown>) => {
    socket.write(JSON.stringify(args === undefined ? { execute } : { execute, arguments: args }));
    return next();
  };
  expect(await next()).toHaveProperty('QMP');
  expect(await cmd('qmp_capabilities')).toEqual({ return: {} });
  return { cmd, close: () => socket.destroy() };
}

const pattern = (i: number) => new Uint8Array(CHUNK).fill(0x30 + i);

/**
 * Connects to export `name`, sends WRITES writes of 64 KiB (write i at i * 1 MiB, filled with
 * 0x30 + i), waits for the first reply (the bucket starts empty, so it goes at once) and for
 * the others to reach the limit's queue. Replies are collected as they come.
 */
async function queueWrites(port: number, name: string) {
  const client = await RawNbdClient.connect(port);
  await client.handshake(name);
  for (let i = 0; i < WRITES; i++) client.request(P.NBD_CMD_WRITE, i * 1024 * KiB, CHUNK, BigInt(i), 0, pattern(i));
  const acknowledged: number[] = [];
  const failed: number[] = [];
  const replies = (async () => {
    for (let i = 0; i < WRITES; i++) {
      const r = await client.simpleReply();
      (r.error === 0 ? acknowledged : failed).push(Number(r.cookie));
    }
  })().catch(() => {});
  for (let i = 0; i < 500 && acknowledged.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  expect(acknowledged).toEqual([0]);
  // The rest wait for 64 KiB each at 1 byte/s (18 hours apiece).
  await new Promise((r) => setTimeout(r, 300));
  expect(acknowledged).toEqual([0]);
  return { client, acknowledged, failed, replies };
}

/** qemu-img check is clean, and every acknowledged write reads back from the image. */
async function expectCleanWith(image: string, acknowledged: number[]): Promise<void> {
  const check = await run('qemu-img', ['check', '-f', 'qcow2', image]);
  expect(check.stdout).toMatch(/No errors were found on the image/);
  await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, `${image}.raw`]);
  const raw = fs.readFileSync(`${image}.raw`);
  for (const i of acknowledged) expect(raw.subarray(i * 1024 * KiB, i * 1024 * KiB + CHUNK).equals(Buffer.from(pattern(i)))).toBe(true);
}

async function qcow2(name: string): Promise<string> {
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', p(name), '16M']);
  return p(name);
}

describe.skipIf(!available)('blocklayer serve: stopping does not wait for the limits (queued requests go now)', () => {
  for (const how of ['SIGTERM', 'QMP quit'] as const) {
    it(`${how} with writes queued at --bps-wr 1: exits 0 within 3 s, every write acknowledged, qemu-img check clean, the data in the image`, async () => {
      const image = await qcow2(`stop-${how.replace(' ', '-')}.qcow2`);
      const sock = p(`qmp-${how.replace(' ', '-')}.sock`);
      const s = await serve(image, '-x', 'd', '-p', '0', '--bps-wr', '1', ...(how === 'QMP quit' ? ['--qmp', `unix:${sock}`] : []));
      const qmp = how === 'QMP quit' ? await qmpConnect(sock) : null;
      try {
        const { client, acknowledged, failed, replies } = await queueWrites(s.port, 'd');
        const t0 = Date.now();
        if (qmp) expect(await qmp.cmd('quit')).toEqual({ return: {} });
        else s.child.kill('SIGTERM');
        const code = await within(s.exited, 3000);
        const elapsed = Date.now() - t0;
        expect(code).toBe(0);
        expect(elapsed).toBeLessThan(3000);
        await replies;
        await client.closed;
        expect(failed).toEqual([]);
        expect(acknowledged.sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
        expect(s.stderr()).toMatch(/shutting down[\s\S]*shut down\n$/);
        await expectCleanWith(image, acknowledged);
      } finally {
        qmp?.close();
        if (s.child.exitCode === null) s.child.kill('SIGKILL');
        await s.exited;
      }
    });
  }

  it('block-export-del: safe mode refuses while a client is connected; hard mode with writes queued at --bps-wr 1 completes within 3 s, every write acknowledged', async () => {
    const image = await qcow2('del.qcow2');
    const sock = p('qmp-del.sock');
    const s = await serve(image, '-x', 'd', '-p', '0', '--bps-wr', '1', '--qmp', `unix:${sock}`);
    const qmp = await qmpConnect(sock);
    try {
      const { client, acknowledged, failed, replies } = await queueWrites(s.port, 'd');
      // QEMU's meaning: 'safe' (the default) refuses while the export is in use; 'hard' disconnects its clients.
      expect(await qmp.cmd('block-export-del', { id: 'd' })).toEqual({ error: { class: 'GenericError', desc: "export 'd' still in use" } });
      expect(await qmp.cmd('block-export-del', { id: 'd', mode: 'safe' })).toEqual({ error: { class: 'GenericError', desc: "export 'd' still in use" } });
      const t0 = Date.now();
      expect(await within(qmp.cmd('block-export-del', { id: 'd', mode: 'hard' }), 3000)).toEqual({ return: {} });
      expect(Date.now() - t0).toBeLessThan(3000);
      expect(await within(client.closed, 3000)).toBeUndefined();
      await replies;
      expect(failed).toEqual([]);
      expect(acknowledged.sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
      // The drive is throttled again once the export is gone, and the daemon still runs and stops promptly.
      expect(await qmp.cmd('quit')).toEqual({ return: {} });
      expect(await within(s.exited, 3000)).toBe(0);
      await expectCleanWith(image, acknowledged);
    } finally {
      qmp.close();
      if (s.child.exitCode === null) s.child.kill('SIGKILL');
      await s.exited;
    }
  });
});

// A real ENOSPC needs a small file system: a tmpfs, which only root can mount (CI runs as root).
const root = process.getuid?.() === 0;
if (!root) console.log('blocklayer serve drain test with werror=stop skipped: it mounts a tmpfs, run as root');

describe.skipIf(!available || !root)('blocklayer serve: stopping while a drive is paused by werror=stop', () => {
  let small: string;
  beforeAll(() => {
    small = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-serve-enospc-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', small]);
  });
  afterAll(() => {
    execFileSync('umount', [small]);
    fs.rmdirSync(small);
  });

  it('SIGTERM exits 0 within 3 s: the write held for QMP cont fails with ENOSPC (never acknowledged), the rest of the data is intact', async () => {
    const image = path.join(small, 'disk.raw');
    fs.writeFileSync(image, '');
    fs.truncateSync(image, 4 << 20); // sparse: writes need free blocks
    // Fill the file system, leaving 128 KiB.
    const filler = path.join(small, 'filler');
    const fd = fs.openSync(filler, 'w');
    try {
      for (;;) fs.writeSync(fd, Buffer.alloc(64 * KiB, 1));
    } catch (e) {
      expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
    }
    fs.closeSync(fd);
    fs.truncateSync(filler, fs.statSync(filler).size - 128 * KiB);

    const s = await serve('-p', '0', '--drive', `file=${image},format=raw,id=d,werror=stop`);
    try {
      const client = await RawNbdClient.connect(s.port);
      await client.handshake('d');
      client.request(P.NBD_CMD_WRITE, 0, CHUNK, 1n, 0, pattern(1));
      expect(await client.simpleReply()).toMatchObject({ error: 0, cookie: 1n });
      // 1 MiB does not fit: the drive pauses and holds the write (QEMU: the VM stops on the error).
      client.request(P.NBD_CMD_WRITE, 2 << 20, 1 << 20, 2n, 0, new Uint8Array(1 << 20).fill(2));
      const reply = client.simpleReply();
      reply.catch(() => {}); // awaited below; a failure there is the test's
      await new Promise((r) => setTimeout(r, 500));
      expect(client.pending).toBe(0);
      const t0 = Date.now();
      s.child.kill('SIGTERM');
      expect(await within(s.exited, 3000)).toBe(0);
      expect(Date.now() - t0).toBeLessThan(3000);
      expect(await reply).toMatchObject({ error: P.NBD_ENOSPC, cookie: 2n });
      expect(s.stderr()).toMatch(/SIGTERM: shutting down \(draining in-flight requests\)\n.*disconnected from 'd'\nblocklayer serve: shut down\n$/);
      await client.closed;
      fs.rmSync(filler);
      expect(fs.readFileSync(image).subarray(0, CHUNK).equals(Buffer.from(pattern(1)))).toBe(true);
    } finally {
      if (s.child.exitCode === null) s.child.kill('SIGKILL');
      await s.exited;
    }
  });
});
