import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** Runs a program without blocking the event loop (the server under test lives in this process). */
export function run(cmd: string, args: string[], timeoutMs = 60_000, stdout: 'pipe' | 'ignore' = 'pipe'): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', stdout, 'pipe'] });
    let out = '';
    let stderr = '';
    // Keep the last 64 KiB of each stream: nbd-tester-client prints a progress line per request.
    const keep = (s: string) => (s.length > 65536 ? s.slice(-65536) : s);
    child.stdout?.on('data', (d: Buffer) => {
      out = keep(out + d.toString());
    });
    child.stderr?.on('data', (d: Buffer) => {
      stderr = keep(stderr + d.toString());
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: out, stderr });
    });
  });
}

export async function ok(cmd: string, args: string[], timeoutMs?: number): Promise<string> {
  const r = await run(cmd, args, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.slice(-2000)}${r.stdout.slice(-2000)}`);
  return r.stdout;
}

/** Whether `cmd` is an executable name found on PATH. */
export function haveProgram(cmd: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d !== '' && fs.existsSync(path.join(d, cmd)));
}

/** Resolves once something accepts TCP connections on 127.0.0.1:`port` (polls every 25 ms); false after `tries` attempts. */
export async function waitForPort(port: number, tries = 200): Promise<boolean> {
  const net = await import('node:net');
  for (let i = 0; i < tries; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (up) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return false;
}
