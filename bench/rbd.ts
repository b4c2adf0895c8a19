import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { BlockLayer } from '../src/index.js';
import { median } from './util.js';

const run = promisify(execFile);

/** Options of {@link rbdBench}; defaults come from the env that scripts/ceph-test-cluster.sh prints. */
export interface RbdBenchOptions {
  /** Path of ceph.conf (default: $BLOCKLAYER_CEPH_CONF). */
  conf?: string;
  /** Pool for the scratch image (default: $BLOCKLAYER_CEPH_POOL or rbd). */
  pool?: string;
  /** Seconds per scenario through our driver (default 5). */
  seconds?: number;
  /** Scratch image size in bytes (default 256 MiB). */
  imageSize?: number;
  /** Requests in flight (default 16). */
  queueDepth?: number;
  /** Rounds per scenario, alternating who goes first (default 4). */
  rounds?: number;
  /** Run only the scenarios whose names contain one of these strings. */
  only?: string[];
}

/** One scenario's figures: ours through a Drive, and `rbd bench` doing the same amount of I/O. */
export interface RbdBenchResult {
  scenario: string;
  /** Our figures over all rounds; cpuUsPerOp: CPU time of this whole process (all threads, librbd's too) per request. */
  ours: { iops: number; mbps: number; cpuUsPerOp: number };
  /** rbd bench over all rounds; cpuUsPerOp: its process's CPU time per request, start-up taken off. */
  rbdBench: { iops: number; mbps: number; cpuUsPerOp: number };
  /** Median over the rounds of ours.iops / rbdBench.iops in that round (goal ≥ 0.9). */
  ratio: number;
  /** Each round's ratio, sorted. */
  roundRatios: number[];
  /**
   * The same requests from C through librbd's C API (bench/baseline/rbd-c-api.c), the API our
   * driver calls; absent where no C compiler is found. `callback`: completions start the next
   * request on librbd's thread; `pipe`: one thread waits on librbd's event pipe, as our event
   * loop does. Each ratio: median over the rounds of ours / that C run.
   */
  cApi?: Record<CMode, CFigures>;
}

type CMode = 'callback' | 'pipe';
const C_MODES: CMode[] = ['callback', 'pipe'];

interface CFigures {
  iops: number;
  mbps: number;
  cpuUsPerOp: number;
  ratio: number;
  roundRatios: number[];
}

interface Run {
  ops: number;
  seconds: number;
  cpuSeconds: number;
}

/** Builds the C baseline into a temporary directory; null (with the reason printed) where it cannot be built. */
async function buildCBaseline(dir: string): Promise<string | null> {
  const source = fileURLToPath(new URL('./baseline/rbd-c-api.c', import.meta.url));
  const binary = join(dir, 'rbd-c-api');
  try {
    await run(process.env.CC ?? 'cc', ['-O2', '-o', binary, source, '-l:librbd.so.1', '-l:librados.so.2', '-lpthread']);
    return binary;
  } catch (e) {
    console.log(`rbd bench: no C baseline (could not build bench/baseline/rbd-c-api.c: ${(e as Error).message.split('\n')[0]})`);
    return null;
  }
}


interface Scenario {
  name: string;
  type: 'read' | 'write';
  size: number;
  pattern: 'rand' | 'seq';
}

const SCENARIOS: Scenario[] = [
  { name: '4 KiB random read', type: 'read', size: 4096, pattern: 'rand' },
  { name: '4 KiB random write', type: 'write', size: 4096, pattern: 'rand' },
  { name: '1 MiB sequential read', type: 'read', size: 1 << 20, pattern: 'seq' },
];

/**
 * 4 KiB random reads and writes and 1 MiB sequential reads at QD 16 through the rbd driver,
 * each followed by `rbd bench` doing the same number of I/Os on the same image; prints a table.
 */
export async function rbdBench(options: RbdBenchOptions = {}): Promise<RbdBenchResult[]> {
  const conf = options.conf ?? process.env.BLOCKLAYER_CEPH_CONF;
  if (!conf) throw new Error('rbdBench: no cluster; run: eval "$(scripts/ceph-test-cluster.sh start)"');
  const pool = options.pool ?? process.env.BLOCKLAYER_CEPH_POOL ?? 'rbd';
  const seconds = options.seconds ?? 5;
  const size = options.imageSize ?? 256 << 20;
  const qd = options.queueDepth ?? 16;
  const rounds = options.rounds ?? 4;
  const image = `bl-bench-${process.pid}`;
  const rbd = (...args: string[]) => run('rbd', ['-c', conf, ...args], { maxBuffer: 1 << 24 });

  await rbd('create', '--size', `${size}B`, `${pool}/${image}`);
  const results: RbdBenchResult[] = [];
  const tmp = await mkdtemp(join(tmpdir(), 'blocklayer-rbd-bench-'));
  try {
    const cBinary = await buildCBaseline(tmp);
    // Fill the image so reads hit real objects.
    await rbd('bench', '--io-type', 'write', '--io-size', '4M', '--io-threads', '4', '--io-total', `${size}B`, '--io-pattern', 'seq', `${pool}/${image}`);
    const layer = new BlockLayer();
    const only = options.only;
    /**
     * Our driver for `seconds`: QD workers doing back-to-back requests. Like `rbd bench`, it
     * flushes once before it starts (which takes librbd's cache out of its
     * writethrough-until-flush mode) and, for writes, once at the end inside the timing.
     */
    const ours = async (s: Scenario) => {
      const drive = await layer.openDrive({ driver: 'rbd', pool, image, conf });
      await drive.flush();
      let ops = 0;
      let next = 0;
      const slots = Math.floor(size / s.size);
      const cpu = process.cpuUsage();
      const start = performance.now();
      const deadline = start + seconds * 1000;
      const worker = async () => {
        const buffer = new Uint8Array(s.size).fill(0x5a);
        while (performance.now() < deadline) {
          const slot = s.pattern === 'rand' ? Math.floor(Math.random() * slots) : next++ % slots;
          if (s.type === 'read') await drive.read(slot * s.size, buffer);
          else await drive.write(slot * s.size, buffer);
          ops++;
        }
      };
      await Promise.all(Array.from({ length: qd }, worker));
      if (s.type === 'write') await drive.flush();
      const elapsed = (performance.now() - start) / 1000;
      const used = process.cpuUsage(cpu);
      // Writes must release the exclusive lock before rbd bench takes the image.
      await drive.close();
      return { ops, seconds: elapsed, cpuSeconds: (used.user + used.system) / 1e6 };
    };
    /** CPU seconds (user + system) of a child run through bash, which prints `times` last. */
    const timed = async (...args: string[]) => {
      const { stdout } = await run('bash', ['-c', 'rbd "$@"; status=$?; times; exit $status', 'rbd', '-c', conf, ...args], { maxBuffer: 1 << 24 });
      const lines = stdout.trimEnd().split('\n');
      const times = /(\d+)m([\d.]+)s (\d+)m([\d.]+)s/.exec(lines.at(-1) ?? '');
      const cpuSeconds = times ? Number(times[1]) * 60 + Number(times[2]) + Number(times[3]) * 60 + Number(times[4]) : Number.NaN;
      return { stdout: lines.slice(0, -2).join('\n'), cpuSeconds };
    };
    const benchArgs = (s: Scenario, ops: number) => [
      'bench',
      '--io-type',
      s.type,
      '--io-size',
      `${s.size}B`,
      '--io-threads',
      String(qd),
      '--io-total',
      `${ops * s.size}B`,
      '--io-pattern',
      s.pattern,
      `${pool}/${image}`,
    ];
    /** `rbd bench` doing `ops` requests of the same kind; its own ops/sec figure and CPU per op (start-up cost taken off). */
    const theirs = async (s: Scenario, ops: number, startupCpu: number) => {
      const { stdout, cpuSeconds } = await timed(...benchArgs(s, ops));
      const m = /elapsed:\s*([\d.]+)\s+ops:\s*(\d+)\s+ops\/sec:\s*([\d.]+)/.exec(stdout);
      if (!m) throw new Error(`rbdBench: could not parse rbd bench output:\n${stdout}`);
      const done = Number(m[2]);
      return { ops: done, seconds: done / Number(m[3]), cpuSeconds: Math.max(0, cpuSeconds - startupCpu) };
    };
    /** The C baseline for `seconds`, with the same queue depth and pattern. */
    const viaC = async (s: Scenario, binary: string, mode: CMode): Promise<Run> => {
      const { stdout } = await run(binary, [conf, pool, image, s.type, s.pattern, String(s.size), String(seconds), String(qd), mode]);
      const r = JSON.parse(stdout) as Run;
      if (!(r.ops > 0 && r.seconds > 0)) throw new Error(`rbdBench: the C baseline did nothing: ${stdout}`);
      return r;
    };
    for (const s of SCENARIOS.filter((x) => !only?.length || only.some((o) => x.name.includes(o)))) {
      // What rbd bench costs before its first request (start, connect, open): one request.
      const startupCpu = (await timed(...benchArgs(s, 1))).cpuSeconds;
      // Rounds in alternating order (ours first, then rbd bench first): the cluster warms up
      // and a 2-CPU machine is noisy, so neither side always gets the better turn. Each round
      // pairs adjacent runs; the ratio reported is the median of the rounds' ratios.
      const our = { ops: 0, seconds: 0, cpu: 0 };
      const their = { ops: 0, seconds: 0, cpu: 0 };
      const ratios: number[] = [];
      const c = { callback: { ops: 0, seconds: 0, cpu: 0 }, pipe: { ops: 0, seconds: 0, cpu: 0 } };
      const cRatios: Record<CMode, number[]> = { callback: [], pipe: [] };
      for (let round = 0; round < rounds; round++) {
        let a: { ops: number; seconds: number; cpuSeconds: number };
        let b: { ops: number; seconds: number; cpuSeconds: number };
        if (round % 2 === 0) {
          a = await ours(s);
          b = await theirs(s, a.ops, startupCpu);
        } else {
          // rbd bench first, sized like our previous runs.
          b = await theirs(s, Math.max(1, Math.round(our.ops / round)), startupCpu);
          a = await ours(s);
        }
        our.ops += a.ops;
        our.seconds += a.seconds;
        our.cpu += a.cpuSeconds;
        their.ops += b.ops;
        their.seconds += b.seconds;
        their.cpu += b.cpuSeconds;
        ratios.push(a.ops / a.seconds / (b.ops / b.seconds));
        if (cBinary !== null) {
          // In the same round as our run, the two modes in alternating order.
          for (const mode of round % 2 === 0 ? C_MODES : [...C_MODES].reverse()) {
            const k = await viaC(s, cBinary, mode);
            c[mode].ops += k.ops;
            c[mode].seconds += k.seconds;
            c[mode].cpu += k.cpuSeconds;
            cRatios[mode].push(a.ops / a.seconds / (k.ops / k.seconds));
          }
        }
      }
      const figures = (x: { ops: number; seconds: number; cpu: number }) => ({
        iops: x.ops / x.seconds,
        mbps: (x.ops * s.size) / x.seconds / 1e6,
        cpuUsPerOp: (x.cpu * 1e6) / x.ops,
      });
      const result: RbdBenchResult = {
        scenario: s.name,
        ours: figures(our),
        rbdBench: figures(their),
        ratio: median(ratios),
        roundRatios: ratios.sort((x, y) => x - y),
      };
      if (cBinary !== null) {
        const of = (mode: CMode): CFigures => ({ ...figures(c[mode]), ratio: median(cRatios[mode]), roundRatios: cRatios[mode].sort((x, y) => x - y) });
        result.cApi = { callback: of('callback'), pipe: of('pipe') };
      }
      results.push(result);
    }
  } finally {
    await rbd('rm', '--no-progress', `${pool}/${image}`).catch(() => undefined);
    await rm(tmp, { recursive: true, force: true });
  }
  const f = (n: number) => n.toFixed(n >= 100 ? 0 : 1).padStart(8);
  console.log(`rbd driver vs rbd bench, QD ${qd}, ${rounds} rounds of ${seconds} s per scenario (ratio: median of the rounds)`);
  console.log('scenario                 ours IOPS   MB/s  µs CPU/op | rbd bench IOPS   MB/s  µs CPU/op | ratio  (rounds)');
  for (const r of results) {
    console.log(
      `${r.scenario.padEnd(24)} ${f(r.ours.iops)} ${f(r.ours.mbps)} ${f(r.ours.cpuUsPerOp)}   | ${f(r.rbdBench.iops).padStart(14)} ${f(r.rbdBench.mbps)} ${f(r.rbdBench.cpuUsPerOp)}   | ${r.ratio.toFixed(2)}  (${r.roundRatios.map((x) => x.toFixed(2)).join(' ')})`,
    );
  }
  if (results.some((r) => r.cApi)) {
    console.log("The same requests from C through librbd's C API (reads into the caller's buffer, as ours; rbd bench reads into librbd's):");
    console.log('  callback: the next request starts on librbd\'s thread; pipe: a thread waits on librbd\'s event pipe, as our event loop does');
    console.log('scenario                 mode     C IOPS     MB/s  µs CPU/op | C / rbd bench | ours / C  (rounds)');
    for (const r of results) {
      for (const mode of C_MODES) {
        const k = r.cApi?.[mode];
        if (!k) continue;
        console.log(
          `${r.scenario.padEnd(24)} ${mode.padEnd(8)} ${f(k.iops)} ${f(k.mbps)} ${f(k.cpuUsPerOp)}   | ${(k.iops / r.rbdBench.iops).toFixed(2).padStart(13)} | ${k.ratio.toFixed(2).padStart(8)}  (${k.roundRatios.map((x) => x.toFixed(2)).join(' ')})`,
        );
      }
    }
  }
  return results;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await rbdBench({ seconds: Number(process.env.BENCH_SECONDS ?? 5), rounds: Number(process.env.BENCH_ROUNDS ?? 4), only: process.argv.slice(2) });
}
