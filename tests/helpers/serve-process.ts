import { type ChildProcess, spawn } from 'node:child_process';
import { CLI } from './cli.js';


/** A running `blocklayer serve`: its stderr so far, its port (0 on a unix socket), and how it ended. */
export interface Served {
  child: ChildProcess;
  port: number;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** Spawns `blocklayer serve …` and waits for its "listening" line. */
export async function serve(...args: string[]): Promise<Served> {
  const child = spawn(process.execPath, [...CLI, 'serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const port = await new Promise<number>((resolve, reject) => {
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      err += chunk;
      const m = /listening on [\d.]+:(\d+)/.exec(err);
      if (m) resolve(Number(m[1]));
      else if (/listening on unix:/.test(err)) resolve(0);
    });
    void exited.then((code) => reject(new Error(`serve exited with ${code} before listening: ${err}`)));
  });
  return { child, port, stderr: () => err, exited };
}
