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
  /** Rounds per scenario, alternating who goes first (default 2). */
  rounds?: number;
  /** Run only the scenarios whose names contain one of these strings. */
  only?: string[];
}

/** One scenario's figures: ours through a Drive, and `rbd bench` doing the same amount of I/O. */
export interface RbdBenchResult {
  scenario: string;
  ours: { iops: number; mbps: number };
  rbdBench: { iops: number; mbps: number };
  /** ours.iops / rbdBench.iops (goal ≥ 0.8). */
  ratio: number;
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
  const rounds = options.rounds ?? 2;
  const image = `bl-bench-${process.pid}`;
  const rbd = (...args: string[]) => run('rbd', ['-c', conf, ...args], { maxBuffer: 1 << 24 });

  await rbd('create', '--size', `${size}B`, `${pool}/${image}`);
  const results: RbdBenchResult[] = [];
  try {
    // Fill the image so reads hit real objects.
    await rbd('bench', '--io-type', 'write', '--io-size', '4M', '--io-threads', '4', '--io-total', `${size}B`, '--io-pattern', 'seq', `${pool}/${image}`);
    const layer = new BlockLayer();
    const only = options.only;
    /** Our driver for `seconds`: QD workers doing back-to-back requests. */
    const ours = async (s: Scenario) => {
      const drive = await layer.openDrive({ driver: 'rbd', pool, image, conf });
      let ops = 0;
      let next = 0;
      const slots = Math.floor(size / s.size);
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
      const elapsed = (performance.now() - start) / 1000;
      // Writes must release the exclusive lock before rbd bench takes the image.
      await drive.close();
      return { ops, seconds: elapsed };
    };
    /** `rbd bench` doing `ops` requests of the same kind; its own ops/sec figure. */
    const theirs = async (s: Scenario, ops: number) => {
      const { stdout } = await rbd(
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
      );
      const m = /elapsed:\s*([\d.]+)\s+ops:\s*(\d+)\s+ops\/sec:\s*([\d.]+)/.exec(stdout);
      if (!m) throw new Error(`rbdBench: could not parse rbd bench output:\n${stdout}`);
      const done = Number(m[2]);
      return { ops: done, seconds: done / Number(m[3]) };
    };
    for (const s of SCENARIOS.filter((x) => !only?.length || only.some((o) => x.name.includes(o)))) {
      // Two rounds in opposite order (ours first, then rbd bench first): the cluster warms up
      // and a 2-CPU machine is noisy, so neither side always gets the better turn.
      let ourOps = 0;
      let ourSeconds = 0;
      let theirOps = 0;
      let theirSeconds = 0;
      for (let round = 0; round < rounds; round++) {
        const runOurs = async () => {
          const r = await ours(s);
          ourOps += r.ops;
          ourSeconds += r.seconds;
          return r.ops;
        };
        const runTheirs = async (ops: number) => {
          const r = await theirs(s, ops);
          theirOps += r.ops;
          theirSeconds += r.seconds;
        };
        if (round % 2 === 0) await runTheirs(await runOurs());
        else {
          // rbd bench first, sized like our previous runs.
          await runTheirs(Math.max(1, Math.round(ourOps / round)));
          await runOurs();
        }
      }
      const o = { iops: ourOps / ourSeconds, mbps: (ourOps * s.size) / ourSeconds / 1e6 };
      const t = { iops: theirOps / theirSeconds, mbps: (theirOps * s.size) / theirSeconds / 1e6 };
      results.push({ scenario: s.name, ours: o, rbdBench: t, ratio: o.iops / t.iops });
    }
  } finally {
    await rbd('rm', '--no-progress', `${pool}/${image}`).catch(() => undefined);
  }
  const f = (n: number) => n.toFixed(n >= 100 ? 0 : 1).padStart(8);
  console.log(`rbd driver vs rbd bench, QD ${qd}, ${rounds} rounds of ${seconds} s per scenario`);
  console.log('scenario                 ours IOPS   MB/s | rbd bench IOPS   MB/s | ratio');
  for (const r of results) {
    console.log(
      `${r.scenario.padEnd(24)} ${f(r.ours.iops)} ${f(r.ours.mbps)} | ${f(r.rbdBench.iops).padStart(14)} ${f(r.rbdBench.mbps)} | ${r.ratio.toFixed(2)}`,
    );
  }
  return results;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await rbdBench({ seconds: Number(process.env.BENCH_SECONDS ?? 5), only: process.argv.slice(2) });
}
