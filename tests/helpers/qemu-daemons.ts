import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/**
 * Starts qemu-nbd or qemu-storage-daemon so that it forks once its images are open (and locked),
 * its pid written into `dir`; returns the pid. `cwd` is where relative image names resolve.
 */
export function startQemuDaemon(program: 'qemu-nbd' | 'qemu-storage-daemon', args: string[], dir: string, cwd?: string): number {
  const pidFile = path.join(dir, `${program}-${process.hrtime.bigint()}.pid`);
  const flags = program === 'qemu-nbd' ? ['--fork', '--pid-file', pidFile] : ['--daemonize', '--pidfile', pidFile];
  execFileSync(program, [...flags, ...args], { stdio: 'ignore', ...(cwd === undefined ? {} : { cwd }) });
  return Number(fs.readFileSync(pidFile, 'utf8'));
}

/** SIGTERM to `pid`, then waits (up to 4 s) until the process is gone. */
export async function stopPid(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  for (let i = 0; i < 400 && fs.existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 10));
}
