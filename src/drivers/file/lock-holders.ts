import nodeFs from 'node:fs';

/** Processes looked at before giving up: naming holders is a courtesy on an error path, not a scan of a busy host. */
const MAX_PROCESSES = 4096;

/** One `lock:` line of /proc/PID/fdinfo/FD: `lock:\t1: OFDLCK ADVISORY  READ -1 fe:00:2146602 100 101`. */
const LOCK_LINE = /^lock:\s+\d+:\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+(\d+)\s+(\d+|EOF)\s*$/;

/** Whether an fdinfo text holds a lock that covers `byte`. */
export function fdinfoLocksByte(fdinfo: string, byte: number): boolean {
  for (const line of fdinfo.split('\n')) {
    const m = LOCK_LINE.exec(line);
    if (m && Number(m[1]) <= byte && (m[2] === 'EOF' || byte <= Number(m[2]))) return true;
  }
  return false;
}

/**
 * Names the processes that lock `byte` of the file open as `fd`, for an ELOCKED message
 * (" (held by qemu-nbd, pid 4242)"), from Linux's /proc/PID/fdinfo; empty where /proc says
 * nothing (another OS, another PID namespace, no permission).
 */
export async function describeLockHolders(fd: number, byte: number): Promise<string> {
  // node:fs/promises (readline and the watchers with it) only on this error path, not at start
  const fs = nodeFs.promises;
  try {
    const self = await fs.stat(`/proc/self/fd/${fd}`, { bigint: true });
    const holders: string[] = [];
    const pids = (await fs.readdir('/proc')).filter((n) => /^\d+$/.test(n)).slice(0, MAX_PROCESSES);
    for (const pid of pids) {
      let fds: string[];
      try {
        fds = await fs.readdir(`/proc/${pid}/fd`);
      } catch {
        continue;
      }
      for (const n of fds) {
        if (pid === String(process.pid) && n === String(fd)) continue;
        try {
          const st = await fs.stat(`/proc/${pid}/fd/${n}`, { bigint: true });
          if (st.dev !== self.dev || st.ino !== self.ino) continue;
          if (!fdinfoLocksByte(await fs.readFile(`/proc/${pid}/fdinfo/${n}`, 'utf8'), byte)) continue;
          const comm = (await fs.readFile(`/proc/${pid}/comm`, 'utf8')).trim();
          const who = pid === String(process.pid) ? 'this process' : `${comm}, pid ${pid}`;
          if (!holders.includes(who)) holders.push(who);
        } catch {
          // The process or descriptor went away meanwhile.
        }
      }
    }
    return holders.length > 0 ? ` (held by ${holders.join('; ')})` : '';
  } catch {
    return '';
  }
}
