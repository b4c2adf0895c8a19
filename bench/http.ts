/**
 * http driver speed: sequential 1 MiB range reads of a 256 MiB file through our http node (its
 * default node:http transport) vs curl fetching the same ranges (one curl process, one `--next`
 * operation per range, connections reused) from the same server (a Node range server in its own
 * process). One read at a time, then 4 in flight (curl --parallel --parallel-max 4). Further rows
 * compare our node with `transport: 'fetch'` against curl, and with the bare global fetch reading the
 * same ranges (the reference: what fetch alone costs). Run: `npx tsx bench/http.ts [--rounds N]`.
 */
import { execFile, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { BlockLayer } from '../src/index.js';
import { fmtRate, median, row, sideBySide } from './util.js';

const run = promisify(execFile);
const SIZE = 256 * 1024 * 1024;
const CHUNK = 1024 * 1024;

/** A static file server with byte ranges (HEAD, GET Range), run as a separate process so neither client shares its event loop. */
const SERVER = `
const http = require('node:http');
const fs = require('node:fs');
const file = process.argv[1];
const size = fs.statSync(file).size;
const server = http.createServer((req, res) => {
  const base = { 'Accept-Ranges': 'bytes', ETag: '"bench"', 'Content-Type': 'application/octet-stream' };
  if (req.method === 'HEAD') { res.writeHead(200, { ...base, 'Content-Length': size }); return res.end(); }
  const m = /^bytes=(\\d+)-(\\d+)$/.exec(req.headers.range || '');
  if (!m) { res.writeHead(200, { ...base, 'Content-Length': size }); return fs.createReadStream(file, { highWaterMark: 1 << 20 }).pipe(res); }
  const first = Number(m[1]);
  const last = Math.min(Number(m[2]), size - 1);
  res.writeHead(206, { ...base, 'Content-Length': last - first + 1, 'Content-Range': 'bytes ' + first + '-' + last + '/' + size });
  fs.createReadStream(file, { start: first, end: last, highWaterMark: 1 << 20 }).pipe(res);
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
`;

async function withServer<T>(file: string, fn: (url: string) => Promise<T>): Promise<T> {
  const child = spawn(process.execPath, ['-e', SERVER, file], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      child.once('exit', (code) => reject(new Error(`range server exited with ${code}`)));
    });
    return await fn(`http://127.0.0.1:${port}/disk.raw`);
  } finally {
    child.kill('SIGTERM');
  }
}

type Transport = 'node' | 'fetch';
/** CPU milliseconds per MiB of the last runs of ours (per transport), the bare fetch and curl (less sensitive to a busy machine than MB/s). */
const cpuPerMiB: Record<Transport | 'bare' | 'curl', number[]> = { node: [], fetch: [], bare: [], curl: [] };

/** CPU milliseconds used by this process's waited-for children so far (Linux /proc; undefined elsewhere). */
function childrenCpuMs(): number | undefined {
  try {
    // Fields after the command name: cutime and cstime are the 14th and 15th, in clock ticks (100 per second on Linux).
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[13]) + Number(fields[14])) * 1000) / 100;
  } catch {
    return undefined;
  }
}
const cpuSince = (start: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(start);
  return (u.user + u.system) / 1000 / (SIZE / CHUNK);
};

/** MB/s of our http node (with the given transport) reading the file in 1 MiB pieces, `depth` at a time. */
async function ours(url: string, depth: number, transport: Transport): Promise<number> {
  const layer = new BlockLayer();
  try {
    const node = await layer.openNode({ driver: 'http', url, transport });
    const buffers = Array.from({ length: depth }, () => new Uint8Array(CHUNK));
    let next = 0;
    const cpu = process.cpuUsage();
    const start = performance.now();
    await Promise.all(
      buffers.map(async (buf) => {
        while (next < SIZE) {
          const offset = next;
          next += CHUNK;
          await node.read(offset, buf);
        }
      }),
    );
    const seconds = (performance.now() - start) / 1000;
    cpuPerMiB[transport].push(cpuSince(cpu));
    await node.unref();
    return SIZE / 1e6 / seconds;
  } finally {
    await layer.close();
  }
}

/** MB/s of the global fetch alone reading the same ranges (no driver): what the driver itself costs on top of fetch. */
async function bareFetch(url: string, depth: number): Promise<number> {
  let next = 0;
  const cpu = process.cpuUsage();
  const start = performance.now();
  await Promise.all(
    Array.from({ length: depth }, async () => {
      const buf = new Uint8Array(CHUNK);
      while (next < SIZE) {
        const offset = next;
        next += CHUNK;
        const res = await fetch(url, { headers: { Range: `bytes=${offset}-${offset + CHUNK - 1}` } });
        const reader = (res.body as ReadableStream<Uint8Array>).getReader();
        for (let got = 0; ; ) {
          const { done, value } = await reader.read();
          if (done) break;
          buf.set(value, got);
          got += value.length;
        }
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  cpuPerMiB.bare.push(cpuSince(cpu));
  return SIZE / 1e6 / seconds;
}

/** MB/s of one curl process fetching the same 1 MiB ranges, `depth` at a time, to /dev/null. */
async function curl(url: string, depth: number, configFile: string): Promise<number> {
  const ops: string[] = [];
  for (let o = 0; o < SIZE; o += CHUNK) ops.push(`url = "${url}"\nrange = "${o}-${o + CHUNK - 1}"\noutput = "/dev/null"`);
  fs.writeFileSync(configFile, `${ops.join('\nnext\n')}\n`);
  const args = ['--silent', '--show-error', '--fail', '--config', configFile];
  if (depth > 1) args.unshift('--parallel', '--parallel-max', String(depth));
  const cpu = childrenCpuMs();
  const start = performance.now();
  await run('curl', args, { maxBuffer: 1 << 20 });
  const seconds = (performance.now() - start) / 1000;
  const after = childrenCpuMs();
  if (cpu !== undefined && after !== undefined) cpuPerMiB.curl.push((after - cpu) / (SIZE / CHUNK));
  return SIZE / 1e6 / seconds;
}

export async function httpBench(rounds = 5): Promise<Record<string, unknown>> {
  try {
    await run('curl', ['--version']);
  } catch {
    console.log('http driver: skipped (curl not installed)');
    return { skipped: true };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-http-bench-'));
  const file = path.join(dir, 'disk.raw');
  const fd = fs.openSync(file, 'w');
  const piece = Buffer.alloc(16 * CHUNK);
  for (let o = 0; o < SIZE; o += piece.length) fs.writeSync(fd, randomFillSync(piece));
  fs.closeSync(fd);
  const results: Record<string, unknown> = {};
  console.log(`http driver: sequential 1 MiB range reads of a ${SIZE >> 20} MiB file, ours vs curl, same server (Node, own process), median of ${rounds}`);
  try {
    await withServer(file, async (url) => {
      await ours(url, 1, 'node'); // warm the page cache and the server
      console.log(`  (load average ${os.loadavg()[0].toFixed(1)} on ${os.cpus().length} CPUs)`);
      for (const depth of [1, 4]) {
        for (const k of Object.keys(cpuPerMiB) as (keyof typeof cpuPerMiB)[]) cpuPerMiB[k].length = 0;
        const label = `1 MiB sequential reads, ${depth} in flight (MB/s)`;
        const curlRun = () => curl(url, depth, path.join(dir, 'curl.cfg'));
        const r = await sideBySide(rounds, curlRun, () => ours(url, depth, 'node'));
        results[label] = r;
        row(label, fmtRate(r.subject, ' MB/s'), fmtRate(r.baseline, ' MB/s'), r.ratio, r.rounds);
        // The same node on the global fetch (transport: 'fetch', as in browsers), against curl.
        const f = await sideBySide(rounds, curlRun, () => ours(url, depth, 'fetch'));
        results[`${label}, transport fetch`] = f;
        row("  same, transport: 'fetch', vs curl", fmtRate(f.subject, ' MB/s'), fmtRate(f.baseline, ' MB/s'), f.ratio, f.rounds);
        // Reference: the bare global fetch reading the same ranges, no driver.
        const b = await sideBySide(rounds, curlRun, () => bareFetch(url, depth));
        results[`${label}, bare fetch`] = b;
        row('  reference: the bare global fetch, vs curl', fmtRate(b.subject, ' MB/s'), fmtRate(b.baseline, ' MB/s'), b.ratio, b.rounds);
        const cpu = { node: median(cpuPerMiB.node), fetch: median(cpuPerMiB.fetch), bareFetch: median(cpuPerMiB.bare), curl: cpuPerMiB.curl.length > 0 ? median(cpuPerMiB.curl) : undefined };
        results[`${label} CPU ms/MiB`] = cpu;
        const curlCpu = cpu.curl === undefined ? '' : `, curl ${cpu.curl.toFixed(2)} ms (its process)`;
        console.log(`    CPU per MiB: ours (node) ${cpu.node.toFixed(2)} ms, ours (fetch) ${cpu.fetch.toFixed(2)} ms, bare fetch ${cpu.bareFetch.toFixed(2)} ms${curlCpu}`);
      }
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--rounds');
  await httpBench(i > 0 ? Number(process.argv[i + 1]) : 5);
}
