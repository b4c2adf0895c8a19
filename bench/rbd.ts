import { execFile } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { BlockLayer } from '../src/index.js';

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
  try {
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
    for (const s of SCENARIOS.filter((x) => !only?.length || only.some((o) => x.name.includes(o)))) {
      // What rbd bench costs before its first request (start, connect, open): one request.
      const startupCpu = (await timed(...benchArgs(s, 1))).cpuSeconds;
      // Rounds in alternating order (ours first, then rbd bench first): the cluster warms up
      // and a 2-CPU machine is noisy, so neither side always gets the better turn. Each round
      // pairs adjacent runs; the ratio reported is the median of the rounds' ratios.
      const our = { ops: 0, seconds: 0, cpu: 0 };
      const their = { ops: 0, seconds: 0, cpu: 0 };
      const ratios: number[] = [];
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
      }
      ratios.sort((x, y) => x - y);
      const mid = ratios.length >> 1;
      const median = ratios.length % 2 ? ratios[mid] : (ratios[mid - 1] + ratios[mid]) / 2;
      const o = { iops: our.ops / our.seconds, mbps: (our.ops * s.size) / our.seconds / 1e6, cpuUsPerOp: (our.cpu * 1e6) / our.ops };
      const t = { iops: their.ops / their.seconds, mbps: (their.ops * s.size) / their.seconds / 1e6, cpuUsPerOp: (their.cpu * 1e6) / their.ops };
      results.push({ scenario: s.name, ours: o, rbdBench: t, ratio: median, roundRatios: ratios });
    }
  } finally {
    await rbd('rm', '--no-progress', `${pool}/${image}`).catch(() => undefined);
  }
  const f = (n: number) => n.toFixed(n >= 100 ? 0 : 1).padStart(8);
  console.log(`rbd driver vs rbd bench, QD ${qd}, ${rounds} rounds of ${seconds} s per scenario (ratio: median of the rounds)`);
  console.log('scenario                 ours IOPS   MB/s  µs CPU/op | rbd bench IOPS   MB/s  µs CPU/op | ratio  (rounds)');
  for (const r of results) {
    console.log(
      `${r.scenario.padEnd(24)} ${f(r.ours.iops)} ${f(r.ours.mbps)} ${f(r.ours.cpuUsPerOp)}   | ${f(r.rbdBench.iops).padStart(14)} ${f(r.rbdBench.mbps)} ${f(r.rbdBench.cpuUsPerOp)}   | ${r.ratio.toFixed(2)}  (${r.roundRatios.map((x) => x.toFixed(2)).join(' ')})`,
    );
  }
  return results;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await rbdBench({ seconds: Number(process.env.BENCH_SECONDS ?? 5), rounds: Number(process.env.BENCH_ROUNDS ?? 4), only: process.argv.slice(2) });
}
