import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serve } from '../helpers/serve-process.js';
import { haveProgram } from '../helpers/tools.js';

const CI = process.env.CI === 'true';
const haveFio = haveProgram('fio');
if (CI && !haveFio) throw new Error('fio missing in CI: .ci/run must install fio');
if (!haveFio) console.log('blocklayer serve + QMP + fio test skipped: install fio (apt-get install fio) to run it');

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qmp-fio-'));
  fs.writeFileSync(path.join(dir, 'disk.raw'), Buffer.alloc(64 << 20, 0x5a));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

type Message = { QMP?: unknown; return?: unknown; error?: unknown; event?: string };

/** A bare QMP script: writes one command at a time on the unix socket and reads CRLF-framed JSON lines back. */
async function qmpSession(sock: string): Promise<{ read: () => Promise<Message>; cmd: (execute: string, args?: object) => Promise<Message>; close: () => void }> {
  const socket = net.connect(sock);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.setEncoding('utf8');
  let buffer = '';
  const lines: Message[] = [];
  let wake: (() => void) | null = null;
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    for (let at = buffer.indexOf('\n'); at >= 0; at = buffer.indexOf('\n')) {
      const line = buffer.slice(0, at).trim();
      buffer = buffer.slice(at + 1);
      if (line !== '') {
        const m = JSON.parse(line) as Message;
        if (m.event === undefined) lines.push(m);
      }
    }
    wake?.();
  });
  const read = async (): Promise<Message> => {
    while (lines.length === 0) await new Promise<void>((r) => (wake = r));
    return lines.shift()!;
  };
  const cmd = (execute: string, args?: object) => {
    socket.write(`${JSON.stringify(args === undefined ? { execute } : { execute, arguments: args })}\r\n`);
    return read();
  };
  return { read, cmd, close: () => socket.destroy() };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

describe.skipIf(!haveFio)('blocklayer serve: limits changed over QMP while fio runs', () => {
  it('block_set_io_throttle from 200 to 1000 IOPS 3 s into a fio randread: the per-interval rate follows (±10 %) and query-block reports 1000', async () => {
    const sock = path.join(dir, 'qmp.sock');
    const s = await serve(path.join(dir, 'disk.raw'), '-x', 'disk0', '-p', '0', '--iops', '200', '--qmp', `unix:${sock}`);
    const q = await qmpSession(sock);
    try {
      expect(await q.read()).toHaveProperty('QMP');
      expect(await q.cmd('qmp_capabilities')).toEqual({ return: {} });
      const prefix = path.join(dir, 'rate');
      const fio = spawn(
        'fio',
        ['--name=follow', '--ioengine=nbd', `--uri=nbd://127.0.0.1:${s.port}/disk0`, '--rw=randread', '--bs=4k', '--iodepth=8', '--runtime=7', '--time_based', `--write_iops_log=${prefix}`, '--log_avg_msec=500'],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let fioErr = '';
      fio.stderr!.on('data', (d: Buffer) => (fioErr += d.toString()));
      const fioDone = new Promise<number | null>((resolve) => fio.on('close', resolve));
      // fio's log clock starts with its I/O, which a busy machine can delay well past the spawn:
      // the change is placed 3 s after the server saw fio's first read, and the windows below
      // are placed around the moment it took effect on that clock.
      const reads = async () => {
        const r = (await q.cmd('query-blockstats')).return as { device: string; stats: { rd_operations: number } }[];
        return r.find((b) => b.device === 'disk0')?.stats.rd_operations ?? 0;
      };
      while ((await reads()) === 0) await new Promise((r) => setTimeout(r, 10));
      const ioStart = performance.now();
      await new Promise((r) => setTimeout(r, 3000));
      const limits = { bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 };
      expect(await q.cmd('block_set_io_throttle', { ...limits, id: 'disk0', iops: 1000 })).toEqual({ return: {} });
      const changedAt = performance.now() - ioStart;
      expect(await fioDone, fioErr).toBe(0);

      // fio's iops log: "msec, iops averaged over the 500 ms ending there, direction, bs, offset[, prio]".
      const log = fs.readFileSync(`${prefix}_iops.1.log`, 'utf8');
      const rows = log.trim().split('\n').map((l) => l.split(',').map((f) => Number(f.trim())));
      console.log(`fio iops log (end ms: iops): ${rows.map((r) => `${r[0]}: ${r[1]}`).join(', ')}`);
      // Before the change: intervals after the first (the throttle's initial burst) ending 400 ms before it.
      const before = rows.filter((r) => r[0] > 600 && r[0] <= changedAt - 400).map((r) => r[1]);
      // After: intervals starting 400 ms after it or later.
      const after = rows.filter((r) => r[0] - 500 >= changedAt + 400).map((r) => r[1]);
      expect(before.length).toBeGreaterThanOrEqual(3);
      expect(after.length).toBeGreaterThanOrEqual(4);
      expect(mean(before)).toBeGreaterThanOrEqual(180);
      expect(mean(before)).toBeLessThanOrEqual(220);
      expect(mean(after)).toBeGreaterThanOrEqual(900);
      expect(mean(after)).toBeLessThanOrEqual(1100);

      const blocks = (await q.cmd('query-block')).return as { device: string; inserted: { iops: number } }[];
      expect(blocks.find((b) => b.device === 'disk0')?.inserted.iops).toBe(1000);
    } finally {
      q.close();
      s.child.kill('SIGTERM');
      expect(await s.exited).toBe(0);
    }
  }, 25_000);
});
