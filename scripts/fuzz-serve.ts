/**
 * Fuzzer of a live `blocklayer serve`: random, structured QMP commands and NBD traffic against
 * the built CLI, with a health check after every case.
 *
 *   npm run build
 *   nice -n 19 npx tsx scripts/fuzz-serve.ts --seconds 600 [--seed N] [--out DIR]   (DIR default: $TMPDIR/blocklayer-fuzz-serve-out)
 *   nice -n 19 npx tsx scripts/fuzz-serve.ts --replay DIR --verbose   (a finding's cases again, in order)
 *   nice -n 19 npx tsx scripts/fuzz-serve.ts --qemu --seconds 600   (differential, against qemu-storage-daemon)
 *
 * The supervisor (this process) makes small qcow2/raw images in a temp dir, starts
 * `node dist/cli/blocklayer.cjs serve` on them (a read-only export `known` with a pattern, a dirty
 * bitmap and allocation depth; writable drives d0, d1 and top, whose backing is base; a QMP
 * monitor) and loops over cases: QMP commands drawn from the schema of the commands src/qmp
 * implements with mutated arguments (wrong types, missing and extra members, huge strings and
 * numbers, negative sizes, names that exist, do not or are busy), raw byte garbage and partial
 * lines; NBD clients that negotiate (structured replies, meta contexts) and send random valid and
 * invalid requests, several at once, some cut off mid-payload. After each case the server must
 * still answer query-named-block-nodes within 2 s, a well-behaved NBD client must still read the
 * pattern from `known`, the process must be alive and its stderr free of stack traces, and every
 * QMP command must get exactly one reply whose error text is not a JavaScript internal
 * ("Cannot read properties…"). A finding is saved under --out, one directory per (kind, first stack
 * frame or message pattern), with the case and the cases before it since the server started; the
 * server is then restarted on fresh images. RSS is sampled every 100 cases.
 *
 * `--qemu`: differential mode. The same QMP cases go, one command at a time, to our serve and to
 * qemu-storage-daemon, both started with the same qemu-storage-daemon command line (--blockdev,
 * --export, --nbd-server, --monitor) on copies of the same images; a command one accepts and the
 * other refuses is a finding (`qmp-diff`, grouped by command and error pattern), after which both
 * restart on fresh images. Timing-dependent answers (job commands) are expected noise there.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Rng, withTimeout } from './fuzz-util.js';
import * as P from '../src/drivers/nbd/protocol.js';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '600' },
    seed: { type: 'string' },
    out: { type: 'string', default: path.join(os.tmpdir(), 'blocklayer-fuzz-serve-out') },
    verbose: { type: 'boolean', default: false },
    cli: { type: 'string' },
    qemu: { type: 'boolean', default: false },
    replay: { type: 'string' },
  },
});

/** The built command (`--cli` another copy of it, so that a rebuild during a long run does not pull it away). */
const CLI = path.resolve(args.cli ?? path.join(import.meta.dirname, '../dist/cli/blocklayer.cjs'));
const HEALTH_MS = 2000;
const CASE_MS = 10_000;
const RSS_EVERY = 100;
const HISTORY = 200;
const KNOWN_SIZE = 1 << 20;
/** What `known` holds: 0x5a in its first 64 KiB, 0xa5 at 512 KiB for 4 KiB, zeroes elsewhere. */
const knownByte = (at: number) => (at < 65536 ? 0x5a : at >= 524288 && at < 524288 + 4096 ? 0xa5 : 0);


// ---------------------------------------------------------------- the server

interface Server {
  child: ChildProcess;
  dir: string;
  qmpPath: string;
  nbdPath: string;
  stderr: string;
  /** Where the last case's stderr began. */
  mark: number;
  exited: boolean;
}

function makeImages(dir: string): void {
  const img = (...a: string[]) => execFileSync('qemu-img', a, { cwd: dir, stdio: 'pipe' });
  const io = (file: string, ...cmds: string[]) => execFileSync('qemu-io', [...cmds.flatMap((c) => ['-c', c]), file], { cwd: dir, stdio: 'pipe' });
  img('create', '-q', '-f', 'qcow2', 'known.qcow2', String(KNOWN_SIZE));
  io('known.qcow2', 'write -P 0x5a 0 64k', 'write -P 0xa5 512k 4k');
  img('bitmap', '--add', 'known.qcow2', 'b0');
  img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', 'd0.qcow2', '4M');
  io('d0.qcow2', 'write -P 0x11 0 128k', 'write -z 1M 64k', 'write -P 0x22 3M 8k');
  fs.writeFileSync(path.join(dir, 'd1.raw'), Buffer.alloc(1 << 20, 0x33));
  img('create', '-q', '-f', 'qcow2', 'base.qcow2', '2M');
  io('base.qcow2', 'write -P 0x44 0 256k');
  img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2', '2M');
  io('top.qcow2', 'write -P 0x55 64k 64k');
  img('create', '-q', '-f', 'qcow2', 't0.qcow2', '4M');
  img('create', '-q', '-f', 'qcow2', 't1.qcow2', '2M');
  fs.writeFileSync(path.join(dir, 't2.raw'), Buffer.alloc(4 << 20));
}

/** A qemu-storage-daemon command line over the same images (relative paths: run in the image directory). */
function qsdArgs(): string[] {
  const fmt = (node: string, driver: string, file: string, extra = '') => ['--blockdev', `driver=${driver},node-name=${node},file.driver=file,file.filename=${file}${extra}`];
  const exp = (id: string, extra = '') => ['--export', `type=nbd,id=${id},node-name=${id},name=${id}${extra}`];
  return [
    ...fmt('known', 'qcow2', 'known.qcow2', ',read-only=on'),
    ...fmt('d0', 'qcow2', 'd0.qcow2'),
    ...fmt('d1', 'raw', 'd1.raw'),
    ...fmt('top', 'qcow2', 'top.qcow2'),
    '--nbd-server', 'addr.type=unix,addr.path=nbd.sock',
    ...exp('known', ',bitmaps.0=b0,allocation-depth=on'),
    ...exp('d0', ',writable=on'),
    ...exp('d1', ',writable=on'),
    ...exp('top', ',writable=on'),
    '--chardev', 'socket,id=m,path=qmp.sock,server=on,wait=off', '--monitor', 'chardev=m',
  ];
}

async function startServer(root: string, n: number, flavour: 'ours' | 'ours-qsd' | 'qemu' = 'ours'): Promise<Server> {
  const dir = path.join(root, `run${n}`);
  fs.mkdirSync(dir);
  makeImages(dir);
  const qmpPath = path.join(dir, 'qmp.sock');
  const nbdPath = path.join(dir, 'nbd.sock');
  const [command, argv] = flavour === 'qemu' ? ['qemu-storage-daemon', qsdArgs()] : flavour === 'ours-qsd' ? [process.execPath, [CLI, 'serve', ...qsdArgs()]] : [process.execPath, ourArgs(dir, qmpPath, nbdPath)];
  const child = spawn(command, argv, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const s: Server = { child, dir, qmpPath, nbdPath, stderr: '', mark: 0, exited: false };
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    s.stderr += d;
    // Keep the log bounded: connect/disconnect lines pile up over a long run.
    if (s.stderr.length > 8 << 20) {
      const cut = s.stderr.length - (4 << 20);
      s.stderr = s.stderr.slice(cut);
      s.mark = Math.max(0, s.mark - cut);
    }
  });
  child.on('exit', () => {
    s.exited = true;
  });
  // qemu-storage-daemon says nothing when it is ready: its sockets appear.
  const ready = () => (flavour === 'qemu' ? fs.existsSync(qmpPath) && fs.existsSync(nbdPath) : /listening on/.test(s.stderr));
  for (let i = 0; i < 400 && !ready(); i++) {
    if (s.exited) throw new Error(`serve exited before listening: ${s.stderr}`);
    await sleep(25);
  }
  if (!ready()) throw new Error(`serve did not listen: ${s.stderr}`);
  return s;
}

function ourArgs(dir: string, qmpPath: string, nbdPath: string): string[] {
  return [
    CLI, 'serve', '-k', nbdPath, '--qmp', `unix:${qmpPath}`, '-r', '-x', 'known', '-B', 'b0', '-A', '-f', 'qcow2', path.join(dir, 'known.qcow2'),
    '--drive', `file=${path.join(dir, 'd0.qcow2')},format=qcow2,id=d0`,
    '--drive', `file=${path.join(dir, 'd1.raw')},format=raw,id=d1`,
    '--drive', `file=${path.join(dir, 'top.qcow2')},format=qcow2,id=top`,
  ];
}

async function stopServer(s: Server): Promise<void> {
  if (!s.exited) {
    s.child.kill('SIGKILL');
    await new Promise<void>((resolve) => (s.exited ? resolve() : s.child.once('exit', () => resolve())));
  }
  fs.rmSync(s.dir, { recursive: true, force: true });
}

function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- a QMP connection

type Reply = { return?: unknown; error?: { class: string; desc: string }; id?: unknown };

class Qmp {
  private buffer = '';
  readonly replies: Reply[] = [];
  /** Lines that are not JSON, or replies not of the QMP shapes. */
  readonly junk: string[] = [];
  closed = false;
  private waiter: (() => void) | null = null;
  private constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buffer += d;
      for (let at = this.buffer.indexOf('\n'); at >= 0; at = this.buffer.indexOf('\n')) {
        const line = this.buffer.slice(0, at).trim();
        this.buffer = this.buffer.slice(at + 1);
        if (line === '') continue;
        let m: Reply & { event?: string; QMP?: unknown };
        try {
          m = JSON.parse(line);
        } catch {
          this.junk.push(line);
          continue;
        }
        if (m.event !== undefined || m.QMP !== undefined) continue;
        if (!('return' in m) && !('error' in m)) this.junk.push(line);
        else this.replies.push(m);
      }
      this.wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }
  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }
  static async connect(file: string, negotiate = true): Promise<Qmp> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(file, () => resolve(s));
      s.once('error', reject);
    });
    const q = new Qmp(socket);
    if (negotiate) {
      q.send('{"execute":"qmp_capabilities"}\n');
      const r = await q.next(HEALTH_MS);
      if (r === 'timeout' || r === 'closed' || r.error) throw new Error('qmp_capabilities failed');
    }
    return q;
  }
  send(text: string | Buffer): void {
    if (!this.closed) this.socket.write(text);
  }
  async next(ms: number): Promise<Reply | 'timeout' | 'closed'> {
    const deadline = Date.now() + ms;
    while (this.replies.length === 0) {
      if (this.closed) return 'closed';
      const left = deadline - Date.now();
      if (left <= 0) return 'timeout';
      await withTimeout(new Promise<void>((r) => (this.waiter = r)), left);
    }
    return this.replies.shift()!;
  }
  close(): void {
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------- QMP cases

/** Names the cases use: those of the server's drives, nodes and files, of things the fuzzer adds, and ones that never exist. */
const DRIVES = ['d0', 'd1', 'top'];
const NODES = ['n0', 'n1', 'n2', 'n3', 'f0', 'f1', 'flt0', 'snap0'];
const JOBS = ['j0', 'j1', 'j2'];
const BITMAPS = ['b0', 'b1', 'bm'];
const EXPORTS = ['e0', 'e1', 'd0', 'd1'];
const FILES = ['t0.qcow2', 't1.qcow2', 't2.raw', 'new0.qcow2', 'new1.qcow2', 'd0.qcow2', 'nowhere/x.qcow2'];

class QmpGen {
  /** Node names seen in query-named-block-nodes (those of `known` left out). */
  seenNodes: string[] = [];
  constructor(private readonly rng: Rng) {}

  private weird(): unknown {
    const r = this.rng;
    return r.pick<() => unknown>([
      () => null,
      () => true,
      () => -1,
      () => 0,
      () => 2 ** 63,
      () => -(2 ** 63),
      () => 1e308,
      () => 0.5,
      () => Number.MAX_SAFE_INTEGER + 2,
      () => '',
      () => 'x'.repeat(r.pick([64, 128, 1000, 100_000])),
      () => '\u0000',
      () => '\ud800',
      () => '#block123',
      () => 'a,b=c',
      () => '../../etc/passwd',
      () => [],
      () => [1, 'a', null],
      () => ({}),
      () => ({ a: { b: { c: [] } } }),
      () => this.name(),
      () => String(r.u32()),
    ])();
  }

  name(): string {
    const r = this.rng;
    const pool = [...DRIVES, ...NODES, ...this.seenNodes, 'nope', ''];
    return r.pick(pool);
  }
  job(): string {
    return this.rng.chance(0.85) ? this.rng.pick(JOBS) : this.rng.pick(['nope', '', ...DRIVES]);
  }
  size(): number {
    const r = this.rng;
    return r.pick([0, 512, 4096, 65536, 1 << 20, 2 << 20, 4 << 20, (4 << 20) + 512, 8 << 20, 1 << 30, -512, 2 ** 53, 2 ** 63, 511, r.int(8 << 20)]);
  }
  bool(): boolean {
    return this.rng.chance(0.5);
  }

  /** A node option tree for blockdev-add, sometimes nonsense. */
  nodeTree(depth = 0): Record<string, unknown> {
    const r = this.rng;
    const file = () => ({ driver: 'file', filename: r.pick(FILES), ...(r.chance(0.2) ? { 'read-only': this.bool() } : {}) });
    const child = (): unknown => (depth < 2 && r.chance(0.4) ? this.nodeTree(depth + 1) : r.chance(0.5) ? file() : this.name());
    const tree = r.pick<() => Record<string, unknown>>([
      () => ({ driver: 'qcow2', file: child() }),
      () => ({ driver: 'qcow2', file: child(), backing: r.chance(0.5) ? null : child() }),
      () => ({ driver: 'raw', file: child(), ...(r.chance(0.5) ? { offset: this.size(), size: this.size() } : {}) }),
      () => file(),
      () => ({ driver: r.pick(['null-co', 'null-aio']), size: this.size(), ...(r.chance(0.3) ? { 'read-zeroes': this.bool() } : {}) }),
      () => ({ driver: 'throttle', 'throttle-group': r.pick(['g0', 'nope']), file: child() }),
      () => ({ driver: 'blkdebug', image: child(), ...(r.chance(0.5) ? { 'inject-error': [{ event: r.pick(['read_aio', 'write_aio', 'nope']), errno: r.pick([5, 28, -1]) }] } : {}) }),
      () => ({ driver: 'nbd', server: { type: 'unix', path: r.pick(['/nonexistent.sock', '']) }, export: 'x', 'open-timeout': 0 }),
      () => ({ driver: r.pick(['vmdk', 'vpc', 'vdi', 'vhdx', 'qed', 'nope']), file: child() }),
    ])();
    if (depth === 0 || r.chance(0.5)) tree['node-name'] = r.pick(NODES);
    if (r.chance(0.2)) tree['read-only'] = this.bool();
    if (r.chance(0.1)) tree.discard = r.pick(['unmap', 'ignore', 'nope']);
    if (r.chance(0.1)) tree['detect-zeroes'] = r.pick(['on', 'off', 'unmap', 'x']);
    if (r.chance(0.1)) tree.cache = { direct: this.bool(), 'no-flush': this.bool() };
    return tree;
  }

  action(): { type: string; data: Record<string, unknown> } {
    const r = this.rng;
    const type = r.pick([
      'abort', 'block-dirty-bitmap-add', 'block-dirty-bitmap-remove', 'block-dirty-bitmap-clear', 'block-dirty-bitmap-enable',
      'block-dirty-bitmap-disable', 'block-dirty-bitmap-merge', 'blockdev-snapshot-sync', 'blockdev-snapshot', 'blockdev-backup',
      'blockdev-snapshot-internal-sync', 'drive-backup', 'block-dirty-bitmap-nope',
    ]);
    const cmd = type === 'abort' ? {} : (this.command(type)?.arguments ?? {});
    return { type, data: cmd };
  }

  /** The arguments of one command, well-formed as often as not. */
  command(name: string): { execute: string; arguments?: Record<string, unknown> } | undefined {
    const r = this.rng;
    const jobCommon = () => ({
      ...(r.chance(0.7) ? { 'job-id': this.job() } : {}),
      // Slow jobs stay running, for the job commands (and node changes) to meet them.
      ...(r.chance(0.5) ? { speed: r.pick([0, 1, 4096, 65536, 1 << 20, -1, 2 ** 62]) } : {}),
      ...(r.chance(0.4) ? { 'auto-finalize': this.bool() } : {}),
      ...(r.chance(0.4) ? { 'auto-dismiss': this.bool() } : {}),
    });
    const bitmapRef = () => ({ node: this.name(), name: r.pick(BITMAPS) });
    const table: Record<string, () => Record<string, unknown> | undefined> = {
      'query-named-block-nodes': () => (r.chance(0.5) ? { flat: this.bool() } : undefined),
      'query-block': () => undefined,
      'query-blockstats': () => (r.chance(0.3) ? { 'query-nodes': this.bool() } : undefined),
      'query-block-jobs': () => undefined,
      'query-jobs': () => undefined,
      'query-block-exports': () => undefined,
      'query-commands': () => undefined,
      cont: () => undefined,
      'blockdev-add': () => this.nodeTree(),
      'blockdev-del': () => ({ 'node-name': r.chance(0.6) ? r.pick(NODES) : this.name() }),
      'blockdev-reopen': () => ({ options: [this.nodeTree()] }),
      'block-dirty-bitmap-add': () => ({
        ...bitmapRef(),
        ...(r.chance(0.4) ? { granularity: r.pick([512, 4096, 65536, 1000, 0, 2 ** 31, 2 ** 32]) } : {}),
        ...(r.chance(0.3) ? { persistent: this.bool() } : {}),
        ...(r.chance(0.3) ? { disabled: this.bool() } : {}),
      }),
      'block-dirty-bitmap-remove': bitmapRef,
      'block-dirty-bitmap-clear': bitmapRef,
      'block-dirty-bitmap-enable': bitmapRef,
      'block-dirty-bitmap-disable': bitmapRef,
      'block-dirty-bitmap-merge': () => ({
        node: this.name(),
        target: r.pick(BITMAPS),
        bitmaps: Array.from({ length: r.int(4) }, () => (r.chance(0.5) ? r.pick(BITMAPS) : bitmapRef())),
      }),
      'block-export-add': () => ({
        type: r.pick(['nbd', 'nbd', 'vhost-user-blk', 'fuse']),
        id: r.pick(EXPORTS),
        'node-name': this.name(),
        ...(r.chance(0.5) ? { writable: this.bool() } : {}),
        ...(r.chance(0.5) ? { name: r.pick(['e0', 'e1', 'known', '', 'x'.repeat(5000)]) } : {}),
        ...(r.chance(0.3) ? { bitmaps: [r.pick(BITMAPS)] } : {}),
        ...(r.chance(0.3) ? { 'allocation-depth': this.bool() } : {}),
        ...(r.chance(0.2) ? { description: 'd' } : {}),
      }),
      'block-export-del': () => ({ id: r.pick(EXPORTS), ...(r.chance(0.4) ? { mode: r.pick(['safe', 'hard', 'x']) } : {}) }),
      block_resize: () => ({ ...(r.chance(0.5) ? { 'node-name': this.name() } : { device: r.pick(DRIVES) }), size: this.size() }),
      block_set_io_throttle: () => {
        const a: Record<string, unknown> = { id: r.pick(DRIVES), bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 };
        for (const k of ['bps', 'iops', 'iops_rd', 'bps_max', 'iops_max', 'iops_size']) if (r.chance(0.3)) a[k] = r.pick([0, 1, 100, 1e6, -1, 2 ** 53]);
        if (r.chance(0.2)) a.group = r.pick(['g0', 'g1']);
        if (r.chance(0.2)) a.bps_max_length = r.pick([1, 0, 3600, 1e9]);
        return a;
      },
      'blockdev-mirror': () => ({ ...jobCommon(), device: this.name(), target: this.name(), sync: r.pick(['full', 'top', 'none', 'incremental']), ...(r.chance(0.3) ? { granularity: r.pick([512, 65536, 3000, 0]) } : {}), ...(r.chance(0.3) ? { 'buf-size': this.size() } : {}), ...(r.chance(0.3) ? { 'copy-mode': r.pick(['background', 'write-blocking']) } : {}), ...(r.chance(0.3) ? { 'filter-node-name': 'flt0' } : {}) }),
      'drive-mirror': () => ({ ...jobCommon(), device: r.pick(DRIVES), target: r.pick(FILES), format: r.pick(['qcow2', 'raw']), sync: r.pick(['full', 'top', 'none']), ...(r.chance(0.5) ? { mode: r.pick(['existing', 'absolute-paths']) } : {}) }),
      'blockdev-backup': () => ({ ...jobCommon(), device: this.name(), target: this.name(), sync: r.pick(['full', 'top', 'none', 'incremental', 'bitmap']), ...(r.chance(0.3) ? { bitmap: r.pick(BITMAPS), 'bitmap-mode': r.pick(['on-success', 'always', 'never']) } : {}), ...(r.chance(0.2) ? { 'x-perf': { 'max-workers': r.pick([1, 0, -1, 64]), 'max-chunk': this.size() } } : {}) }),
      'drive-backup': () => ({ ...jobCommon(), device: r.pick(DRIVES), target: r.pick(FILES), sync: r.pick(['full', 'top', 'none']), ...(r.chance(0.5) ? { mode: r.pick(['existing', 'absolute-paths']) } : {}), ...(r.chance(0.5) ? { format: r.pick(['qcow2', 'raw']) } : {}) }),
      'block-stream': () => ({ ...jobCommon(), device: r.pick([...DRIVES, this.name()]), ...(r.chance(0.3) ? { 'base-node': this.name() } : {}), ...(r.chance(0.2) ? { 'filter-node-name': 'flt0' } : {}), ...(r.chance(0.2) ? { 'on-error': r.pick(['report', 'ignore', 'stop']) } : {}) }),
      'block-commit': () => ({ ...jobCommon(), device: r.chance(0.5) ? 'top' : r.pick([...DRIVES, this.name()]), ...(r.chance(0.3) ? { 'top-node': this.name() } : {}), ...(r.chance(0.3) ? { 'base-node': this.name() } : {}), ...(r.chance(0.2) ? { 'filter-node-name': 'flt0' } : {}) }),
      'job-pause': () => ({ id: this.job() }),
      'job-resume': () => ({ id: this.job() }),
      'job-cancel': () => ({ id: this.job() }),
      'job-complete': () => ({ id: this.job() }),
      'job-finalize': () => ({ id: this.job() }),
      'job-dismiss': () => ({ id: this.job() }),
      'block-job-pause': () => ({ device: this.job() }),
      'block-job-resume': () => ({ device: this.job() }),
      'block-job-cancel': () => ({ device: this.job(), ...(r.chance(0.5) ? { force: this.bool() } : {}) }),
      'block-job-complete': () => ({ device: this.job() }),
      'block-job-finalize': () => ({ id: this.job() }),
      'block-job-dismiss': () => ({ id: this.job() }),
      'block-job-set-speed': () => ({ device: this.job(), speed: r.pick([0, 1, 1 << 20, -1, 2 ** 63]) }),
      'blockdev-snapshot-sync': () => ({ ...(r.chance(0.5) ? { device: r.pick(DRIVES) } : { 'node-name': this.name() }), 'snapshot-file': r.pick(FILES), ...(r.chance(0.5) ? { 'snapshot-node-name': 'snap0' } : {}), ...(r.chance(0.5) ? { format: r.pick(['qcow2', 'raw']) } : {}), ...(r.chance(0.5) ? { mode: r.pick(['existing', 'absolute-paths']) } : {}) }),
      'blockdev-snapshot': () => ({ node: this.name(), overlay: this.name() }),
      'blockdev-snapshot-internal-sync': () => ({ device: r.pick([...DRIVES, this.name()]), name: r.pick(['s0', 's1', '', '1']) }),
      'blockdev-snapshot-delete-internal-sync': () => ({ device: r.pick([...DRIVES, this.name()]), ...(r.chance(0.7) ? { name: r.pick(['s0', 's1', '']) } : {}), ...(r.chance(0.4) ? { id: r.pick(['1', '2', '']) } : {}) }),
      transaction: () => ({ actions: Array.from({ length: r.int(5) }, () => this.action()), ...(r.chance(0.2) ? { properties: { 'completion-mode': r.pick(['individual', 'grouped', 'x']) } } : {}) }),
    };
    const gen = table[name];
    if (gen === undefined) return { execute: name };
    const a = gen();
    return a === undefined ? { execute: name } : { execute: name, arguments: a };
  }

  /** Mutates an argument tree in place: a member dropped, added, or given a wrong value. */
  mutate(tree: Record<string, unknown>): void {
    const r = this.rng;
    const objs: Record<string, unknown>[] = [];
    const walk = (v: unknown) => {
      if (v !== null && typeof v === 'object') {
        if (!Array.isArray(v)) objs.push(v as Record<string, unknown>);
        for (const x of Object.values(v)) walk(x);
      }
    };
    walk(tree);
    const o = r.pick(objs);
    const keys = Object.keys(o);
    const op = r.int(4);
    if (op === 0 && keys.length > 0) delete o[r.pick(keys)];
    else if (op === 1) o[r.pick(['x-extra', 'node-name', 'driver', 'size', 'id', 'device', '__proto__', 'constructor', 'toString'])] = this.weird();
    else if (keys.length > 0) o[r.pick(keys)] = this.weird();
  }

  /** One QMP case: a few lines (most a command, some garbage). */
  lines(): string[] {
    const r = this.rng;
    const count = 1 + r.int(4);
    const out: string[] = [];
    for (let i = 0; i < count; i++) {
      if (r.chance(0.05)) {
        out.push(this.garbage());
        continue;
      }
      const cmd = this.command(r.pick(QMP_NAMES))!;
      if (cmd.arguments && r.chance(0.35)) {
        const n = 1 + r.int(2);
        for (let k = 0; k < n; k++) this.mutate(cmd.arguments);
      }
      const msg: Record<string, unknown> = { ...cmd };
      if (r.chance(0.1)) msg.id = this.weird();
      if (r.chance(0.03)) msg.extra = 1;
      if (r.chance(0.03)) msg.arguments = this.weird();
      out.push(JSON.stringify(msg));
    }
    return out;
  }

  garbage(): string {
    const r = this.rng;
    return r.pick<() => string>([
      () => Buffer.from(Array.from({ length: 1 + r.int(200) }, () => r.int(256))).toString('latin1'),
      () => '{"execute":',
      () => '[]',
      () => '{"execute":"query-block"}}',
      () => '{"execute":"query-block","arguments":[]}',
      () => `{"execute":"${'a'.repeat(100_000)}"}`,
      () => `${'['.repeat(10_000)}`,
      () => '{"execute":"query-block","execute":"quit"}',
      () => '{"exec-oob":"query-block"}',
      () => '"\\ud800"',
      () => '{"execute":1}',
      () => '1e99999',
    ])();
  }
}

/** Commands the fuzzer sends (`quit` is left out: it ends the server on purpose). */
const QMP_NAMES = [
  'query-named-block-nodes', 'query-block', 'query-blockstats', 'query-block-jobs', 'query-jobs', 'query-block-exports', 'query-commands', 'cont',
  'blockdev-add', 'blockdev-add', 'blockdev-add', 'blockdev-del', 'blockdev-reopen',
  'block-dirty-bitmap-add', 'block-dirty-bitmap-add', 'block-dirty-bitmap-remove', 'block-dirty-bitmap-clear', 'block-dirty-bitmap-enable', 'block-dirty-bitmap-disable', 'block-dirty-bitmap-merge',
  'block-export-add', 'block-export-add', 'block-export-del', 'block_resize', 'block_set_io_throttle',
  'blockdev-mirror', 'drive-mirror', 'blockdev-backup', 'drive-backup', 'block-stream', 'block-commit', 'block-stream', 'block-commit',
  'job-pause', 'job-resume', 'job-cancel', 'job-complete', 'job-finalize', 'job-dismiss',
  'block-job-pause', 'block-job-resume', 'block-job-cancel', 'block-job-complete', 'block-job-finalize', 'block-job-dismiss', 'block-job-set-speed',
  'blockdev-snapshot-sync', 'blockdev-snapshot', 'blockdev-snapshot-internal-sync', 'blockdev-snapshot-delete-internal-sync',
  'transaction', 'transaction', 'nope-command',
];

/** Error texts that are JavaScript's, not a message written for the user. */
const JS_INTERNAL = /Cannot read prop|Cannot set prop|is not a function|is not iterable|is not defined|Invalid array length|Maximum call stack|Cannot convert|\[object Object\]|undefined|NaN|Unexpected token|out of range|Invalid typed array|Invalid string length/;

// ---------------------------------------------------------------- NBD cases

/** A client that reads the raw reply stream and checks each cookie is answered at most once. */
class NbdConn {
  private chunks: Buffer[] = [];
  private size = 0;
  private waiter: (() => void) | null = null;
  closed = false;
  constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.size += d.byteLength;
      this.wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }
  static connect(file: string): Promise<NbdConn> {
    return new Promise((resolve, reject) => {
      const s = net.connect(file, () => resolve(new NbdConn(s)));
      s.once('error', reject);
    });
  }
  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }
  async read(n: number, ms = 5000): Promise<Buffer> {
    const deadline = Date.now() + ms;
    while (this.size < n) {
      if (this.closed) throw new Error(`closed with ${this.size} of ${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes (${this.size} there)`);
      await withTimeout(new Promise<void>((r) => (this.waiter = r)), left);
    }
    const all = Buffer.concat(this.chunks);
    this.chunks = all.byteLength > n ? [all.subarray(n)] : [];
    this.size -= n;
    return all.subarray(0, n);
  }
  write(b: Uint8Array): void {
    if (!this.closed) this.socket.write(b);
  }
  async option(option: number, data: Uint8Array = Buffer.alloc(0)): Promise<{ type: number; data: Buffer }[]> {
    this.write(Buffer.concat([P.encodeOptionHeader(option, data.byteLength), data]));
    const replies: { type: number; data: Buffer }[] = [];
    for (;;) {
      const h = P.decodeOptionReplyHeader(await this.read(P.OPTION_REPLY_HEADER_SIZE));
      replies.push({ type: h.type, data: await this.read(h.length) });
      if (h.type === P.NBD_REP_ACK || h.type >= 0x80000000) return replies;
    }
  }
  /** Fixed newstyle, then random options (hex data), then (if asked) structured replies and meta contexts, then GO. */
  async negotiate(name: string, structured: boolean, contexts: string[], options: [number, string][] = []): Promise<{ size: number; flags: number }> {
    await this.read(P.SERVER_GREETING_SIZE);
    this.write(Buffer.from([0, 0, 0, P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES]));
    for (const [option, hex] of options) {
      if (option === P.NBD_OPT_EXPORT_NAME || option === P.NBD_OPT_ABORT) throw new Error('options ended');
      const replies = await this.option(option, Buffer.from(hex, 'hex'));
      // A GO that succeeded ended the haggling: what follows is transmission.
      if (option === P.NBD_OPT_GO && replies[replies.length - 1]?.type === P.NBD_REP_ACK) throw new Error('options ended');
    }
    if (structured) await this.option(P.NBD_OPT_STRUCTURED_REPLY);
    if (contexts.length > 0) await this.option(P.NBD_OPT_SET_META_CONTEXT, P.encodeMetaContextRequest(name, contexts));
    const go = await this.option(P.NBD_OPT_GO, P.encodeInfoRequest(name));
    const info = go.find((r) => r.type === P.NBD_REP_INFO && r.data.readUInt16BE(0) === P.NBD_INFO_EXPORT);
    if (!info || go[go.length - 1]?.type !== P.NBD_REP_ACK) throw new Error(`GO refused (${go.map((g) => g.type).join(',')})`);
    return { size: Number(info.data.readBigUInt64BE(2)), flags: info.data.readUInt16BE(10) };
  }
  close(): void {
    this.socket.destroy();
  }
}

/** A well-behaved client reads all of `known` and compares it with the pattern. */
async function knownReads(file: string): Promise<string | undefined> {
  const c = await NbdConn.connect(file);
  try {
    const { size } = await c.negotiate('known', false, []);
    if (size !== KNOWN_SIZE) return `known: size ${size}`;
    const step = 128 * 1024;
    for (let at = 0; at < size; at += step) c.write(P.encodeRequest({ flags: 0, type: P.NBD_CMD_READ, cookie: BigInt(at), offset: at, length: step }));
    for (let i = 0; i < size / step; i++) {
      const r = P.decodeSimpleReply(await c.read(P.SIMPLE_REPLY_SIZE, HEALTH_MS));
      if (r.error !== 0) return `known: read at ${r.cookie} failed with ${r.error}`;
      const data = await c.read(step, HEALTH_MS);
      const at = Number(r.cookie);
      for (let k = 0; k < step; k += 512) if (data[k] !== knownByte(at + k)) return `known: byte ${at + k} is ${data[k]}`;
    }
    return undefined;
  } finally {
    c.close();
  }
}

interface NbdCase {
  export: string;
  structured: boolean;
  contexts: string[];
  /** Requests as [type, flags, offset, length, payload bytes sent (may be short)], and whether the client hangs up at the end. */
  requests: [number, number, number, number, number][];
  cut: boolean;
  /** Options sent before the usual ones: [option, data in hex]. */
  options: [number, string][];
}

/** Random option haggling: well-formed and malformed LIST, INFO, GO, meta context queries, unknown options. */
function nbdOptions(rng: Rng): [number, string][] {
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n >>> 0);
    return b;
  };
  const name = () => rng.pick(['known', 'd0', 'e0', '', 'nope', 'x'.repeat(rng.pick([100, 4096, 5000]))]);
  const query = () => rng.pick(['base:allocation', 'base:', 'qemu:dirty-bitmap:b0', 'qemu:dirty-bitmap:', 'qemu:allocation-depth', 'qemu:', '', 'qemu:dirty-bitmap:nope', 'x'.repeat(5000)]);
  const gens: (() => [number, Buffer])[] = [
    () => [P.NBD_OPT_LIST, rng.chance(0.8) ? Buffer.alloc(0) : Buffer.from('junk')],
    () => [rng.pick([P.NBD_OPT_INFO, P.NBD_OPT_GO]), P.encodeInfoRequest(name(), Array.from({ length: rng.int(4) }, () => rng.pick([0, 1, 2, 3, 4, 0xffff])))],
    () => [rng.pick([P.NBD_OPT_LIST_META_CONTEXT, P.NBD_OPT_SET_META_CONTEXT]), P.encodeMetaContextRequest(name(), Array.from({ length: rng.int(4) }, query))],
    () => [P.NBD_OPT_STRUCTURED_REPLY, rng.chance(0.7) ? Buffer.alloc(0) : Buffer.from([1, 2, 3])],
    () => [P.NBD_OPT_EXTENDED_HEADERS, Buffer.alloc(0)],
    () => [P.NBD_OPT_STARTTLS, Buffer.alloc(0)],
    () => [rng.pick([0, 12, 13, 0xffff, 0x7fffffff]), Buffer.alloc(rng.int(64), 0x41)],
    // Lengths inside the data that lie: a name longer than the option, a query count too big.
    () => [rng.pick([P.NBD_OPT_INFO, P.NBD_OPT_GO]), Buffer.concat([u32(rng.pick([100, 0xffffffff])), Buffer.from('known')])],
    () => [rng.pick([P.NBD_OPT_LIST_META_CONTEXT, P.NBD_OPT_SET_META_CONTEXT]), Buffer.concat([u32(5), Buffer.from('known'), u32(rng.pick([3, 0xffffffff])), u32(15), Buffer.from('base:allocation')])],
    () => [rng.pick([P.NBD_OPT_LIST_META_CONTEXT, P.NBD_OPT_SET_META_CONTEXT, P.NBD_OPT_INFO]), Buffer.from(Array.from({ length: rng.int(40) }, () => rng.int(256)))],
  ];
  return Array.from({ length: rng.chance(0.7) ? 0 : 1 + rng.int(4) }, () => {
    const [o, d] = rng.pick(gens)();
    return [o, d.toString('hex')];
  });
}

function nbdCase(rng: Rng): NbdCase {
  const exp = rng.pick(['known', 'd0', 'd1', 'top', 'e0', 'e1', 'nope']);
  const structured = rng.chance(0.8);
  const contexts = structured
    ? ['base:allocation', 'qemu:dirty-bitmap:b0', 'qemu:dirty-bitmap:b1', 'qemu:allocation-depth', 'qemu:', 'nope:x', 'qemu:dirty-bitmap:'].filter(() => rng.chance(0.35))
    : [];
  const size = exp === 'known' ? KNOWN_SIZE : exp === 'd0' ? 4 << 20 : exp === 'top' ? 2 << 20 : 1 << 20;
  const offsets = () => rng.pick([0, 512, 4096, size - 512, size - 4096, size, size + 512, 2 ** 53, rng.int(size), 1, 2 ** 63 - 1]);
  const lengths = () => rng.pick([0, 1, 512, 4096, 65536, 1 << 20, 32 << 20, 2 ** 32 - 1, rng.int(1 << 20)]);
  const types = [P.NBD_CMD_READ, P.NBD_CMD_WRITE, P.NBD_CMD_FLUSH, P.NBD_CMD_TRIM, P.NBD_CMD_CACHE, P.NBD_CMD_WRITE_ZEROES, P.NBD_CMD_BLOCK_STATUS, P.NBD_CMD_RESIZE, 11, 0xffff];
  const flags = [0, 0, 0, P.NBD_CMD_FLAG_FUA, P.NBD_CMD_FLAG_NO_HOLE, P.NBD_CMD_FLAG_DF, P.NBD_CMD_FLAG_REQ_ONE, P.NBD_CMD_FLAG_FAST_ZERO, P.NBD_CMD_FLAG_PAYLOAD_LEN, 0xffff];
  const n = 1 + rng.int(12);
  const requests: NbdCase['requests'] = [];
  for (let i = 0; i < n; i++) {
    const type = rng.pick(types);
    let length = lengths();
    if (type === P.NBD_CMD_WRITE && length > 4 << 20) length = rng.chance(0.5) ? length : 4096;
    const payload = type === P.NBD_CMD_WRITE ? (rng.chance(0.9) ? Math.min(length, 8 << 20) : rng.int(Math.min(length, 65536))) : 0;
    requests.push([type, rng.pick(flags), offsets(), length, payload]);
  }
  if (rng.chance(0.1)) requests.push([P.NBD_CMD_DISC, 0, 0, 0, 0]);
  return { export: exp, structured, contexts, requests, cut: rng.chance(0.3), options: nbdOptions(rng) };
}

/** Runs an NBD case; returns a problem seen in the replies (a cookie answered twice, a reply to no request), if any. */
async function runNbd(file: string, k: NbdCase, rng: Rng): Promise<string | undefined> {
  const c = await NbdConn.connect(file);
  try {
    try {
      await c.negotiate(k.export, k.structured, k.contexts, k.options);
    } catch (e) {
      // Refused or hung up on: fine. No answer at all is not.
      return /timed out/.test((e as Error).message) ? `negotiation: ${(e as Error).message} after options ${JSON.stringify(k.options).slice(0, 200)}` : undefined;
    }
    const asked = new Map<bigint, number>();
    const answered = new Set<bigint>();
    let cookie = 1n;
    for (const [type, flags, offset, length, payload] of k.requests) {
      const id = cookie++;
      // NBD_CMD_DISC has no reply.
      if (type !== P.NBD_CMD_DISC) asked.set(id, type === P.NBD_CMD_READ ? length : 0);
      const h = Buffer.alloc(28);
      h.writeUInt32BE(P.NBD_REQUEST_MAGIC, 0);
      h.writeUInt16BE(flags, 4);
      h.writeUInt16BE(type, 6);
      h.writeBigUInt64BE(id, 8);
      h.writeBigUInt64BE(BigInt(Math.min(offset, 2 ** 64 - 1)), 16);
      h.writeUInt32BE(length >>> 0, 24);
      c.write(h);
      if (payload > 0) c.write(Buffer.alloc(payload, rng.int(256)));
    }
    if (k.cut) {
      await sleep(rng.int(20));
      return undefined;
    }
    // Read replies until every request is answered, the server hangs up, or 5 s pass.
    const deadline = Date.now() + 5000;
    while (answered.size < asked.size && !c.closed && Date.now() < deadline) {
      let magic: number;
      try {
        magic = (await c.read(4, deadline - Date.now())).readUInt32BE(0);
      } catch {
        break;
      }
      if (magic === P.NBD_SIMPLE_REPLY_MAGIC) {
        const rest = await c.read(12, 2000).catch(() => undefined);
        if (!rest) break;
        const error = rest.readUInt32BE(0);
        const id = rest.readBigUInt64BE(4);
        if (!asked.has(id)) return `simple reply to cookie ${id}, never sent`;
        if (answered.has(id)) return `cookie ${id} answered twice`;
        answered.add(id);
        if (error === 0 && asked.get(id)! > 0) if (!(await c.read(asked.get(id)!, 5000).catch(() => undefined))) break;
      } else if (magic === P.NBD_STRUCTURED_REPLY_MAGIC) {
        const rest = await c.read(16, 2000).catch(() => undefined);
        if (!rest) break;
        const flags = rest.readUInt16BE(0);
        const id = rest.readBigUInt64BE(4);
        const len = rest.readUInt32BE(12);
        if (!asked.has(id)) return `structured chunk for cookie ${id}, never sent`;
        if (answered.has(id)) return `cookie ${id}: a chunk after its last`;
        if (len > 0 && !(await c.read(len, 5000).catch(() => undefined))) break;
        if (flags & P.NBD_REPLY_FLAG_DONE) answered.add(id);
      } else return `reply magic 0x${magic.toString(16)}`;
    }
    // Every request whose bytes were all sent is answered, unless the server hung up (on a protocol violation).
    const whole = k.requests.every(([type, , , length, payload]) => type !== P.NBD_CMD_WRITE || payload === length);
    if (whole && !c.closed && answered.size < asked.size) {
      const open = k.requests.filter(([type], i) => type !== P.NBD_CMD_DISC && !answered.has(BigInt(i + 1))).map(([type, flags, offset, length]) => `${type}/${flags}@${offset}+${length}`);
      return `${open.length} of ${asked.size} requests unanswered after 5 s, connection open: ${open.join(' ')}`;
    }
    return undefined;
  } finally {
    c.close();
  }
}

// ---------------------------------------------------------------- findings

const BAD_STDERR = /Unhandled|TypeError|RangeError|ReferenceError|SyntaxError|AssertionError|Assertion failed|FATAL|\n\s+at [^\n]+:\d+:\d+/;

function firstFrame(text: string): string {
  const m = /\n\s+at ([^\n]+)/.exec(text);
  return m ? m[1]!.replace(/:\d+:\d+\)?$/, '').replace(/^.*\//, '') : '';
}

function saveFinding(out: string, kind: string, key: string, summary: string, history: string[], stderr: string): string | undefined {
  const hash = createHash('sha1').update(`${kind}|${key}`).digest('hex').slice(0, 10);
  const dir = path.join(out, `${kind}-${hash}`);
  if (fs.existsSync(dir)) return undefined;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'finding.txt'), `${summary}\nkey: ${key}\n`);
  fs.writeFileSync(path.join(dir, 'history.jsonl'), `${history.join('\n')}\n`);
  fs.writeFileSync(path.join(dir, 'stderr.txt'), stderr.slice(-200_000));
  return `${dir}: ${summary}`;
}

/** The shape of an error text, for grouping findings: numbers and quoted names dropped. */
const pattern = (s: string) => s.replace(/'[^']*'/g, "'…'").replace(/\d+/g, 'N').slice(0, 200);

// ---------------------------------------------------------------- the loop

async function main(): Promise<void> {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
  const out = path.resolve(args.out!);
  fs.mkdirSync(out, { recursive: true });
  const seconds = Number(args.seconds);
  const seed = args.seed !== undefined ? Number(args.seed) : Date.now() & 0x7fffffff;
  const rng = new Rng(seed);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-fuzz-serve-'));
  console.log(`fuzz-serve: seed ${seed}, ${seconds} s, images in ${root}, findings in ${out}`);
  const deadline = Date.now() + seconds * 1000;
  const counts = { qmp: 0, nbd: 0, commands: 0, restarts: 0 };
  const outcomes: Record<string, number> = {};
  const findings: string[] = [];
  const rss: number[] = [];
  let runs = 0;
  let server = await startServer(root, runs++);
  let health = await Qmp.connect(server.qmpPath);
  /** The fuzzing connections (the health check has its own). */
  const conns: Qmp[] = [];
  const connectAll = async () => {
    for (let i = 0; i < 3; i++) conns[i] = await Qmp.connect(server.qmpPath);
  };
  await connectAll();
  const gen = new QmpGen(rng);
  let history: string[] = [];

  const restart = async () => {
    health.close();
    for (const q of conns) q.close();
    await stopServer(server);
    server = await startServer(root, runs++);
    health = await Qmp.connect(server.qmpPath);
    await connectAll();
    history = [];
    counts.restarts++;
  };
  const found = (kind: string, key: string, summary: string) => {
    const dir = saveFinding(out, kind, key, summary, history, server.stderr);
    outcomes[`finding:${kind}`] = (outcomes[`finding:${kind}`] ?? 0) + 1;
    if (dir) {
      findings.push(dir);
      console.log(`fuzz-serve: new finding ${dir}`);
    }
  };

  // Interrupted: the summary is printed as at the deadline, and the server does not outlive us.
  let stop = false;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => (stop = true));
  // --replay DIR: the cases of a finding's history, in order (cases that ran at once run one after the other).
  type Entry = { qmp?: string[]; qmpParallel?: string[][]; nbd?: NbdCase[] };
  const replay = args.replay === undefined ? undefined : (fs.readFileSync(path.join(args.replay, 'history.jsonl'), 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l)) as Entry[]);
  let cases = 0;
  while (Date.now() < deadline && !stop) {
    cases++;
    const problems: [string, string, string][] = [];
    /** Sends lines on connection `slot` and checks each gets one reply. */
    const qmpLines = async (slot: number, lines: string[]) => {
      if (conns[slot]!.closed) conns[slot] = await Qmp.connect(server.qmpPath).catch(() => conns[slot]!);
      const q = conns[slot]!;
      // Raw bytes: sometimes a line split in two writes, sometimes no newline at the end (a partial line: no reply).
      const partial = rng.chance(0.03);
      const text = lines.join('\n') + (partial ? '' : '\n');
      const garbage = lines.some((l) => {
        try {
          return typeof JSON.parse(l) !== 'object';
        } catch {
          return true;
        }
      });
      if (rng.chance(0.2)) {
        const cut = rng.int(text.length);
        q.send(text.slice(0, cut));
        await sleep(rng.int(5));
        q.send(text.slice(cut));
      } else q.send(text);
      const expect = partial ? lines.length - 1 : lines.length;
      let timedOut = false;
      for (let i = 0; i < expect; i++) {
        const r = await q.next(CASE_MS);
        if (r === 'closed') {
          if (!garbage) problems.push(['qmp-closed', 'closed', `QMP connection closed after ${JSON.stringify(lines).slice(0, 300)}`]);
          break;
        }
        if (r === 'timeout') {
          // Garbage (an open bracket, a partial line) may hold the rest of the input back.
          if (!garbage) problems.push(['qmp-hang', lines[i]!.slice(0, 60), `no reply in ${CASE_MS} ms to ${lines[i]!.slice(0, 300)}`]);
          timedOut = true;
          break;
        }
        counts.commands++;
        const named = /"execute":"([^"]*)"/.exec(lines[i] ?? '')?.[1];
        const cmd = named !== undefined && QMP_NAMES.includes(named) ? named : 'other';
        const outcome = r.error ? `${cmd}:${r.error.class}` : `${cmd}:ok`;
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
        if (r.error && args.verbose) console.log(`  ${cmd}: ${r.error.desc.slice(0, 160)}`);
        if (r.error && JS_INTERNAL.test(r.error.desc)) problems.push(['qmp-internal', `${cmd}|${pattern(r.error.desc)}`, `${cmd}: ${r.error.desc.slice(0, 300)}`]);
      }
      if (q.junk.length > 0) problems.push(['qmp-junk', 'junk', `not a QMP message: ${q.junk.splice(0).join(' | ').slice(0, 300)}`]);
      // Garbage, partial lines and silence leave the reader inside a text: the next case starts on a fresh connection.
      if (partial || garbage || timedOut || q.replies.length > 0) {
        q.close();
        conns[slot] = await Qmp.connect(server.qmpPath).catch(() => q);
      }
    };
    const qmpCase = async (given?: string[][]) => {
      counts.qmp++;
      // Most cases on one connection (commands in order); some spread over three (commands from several clients at once).
      const parallel = given ? given.length > 1 : rng.chance(0.25);
      const groups = given ?? (parallel ? [gen.lines(), gen.lines(), gen.lines()] : [gen.lines()]);
      history.push(JSON.stringify(parallel ? { qmpParallel: groups } : { qmp: groups[0] }));
      if (history.length > HISTORY) history.shift();
      await Promise.all(groups.map((lines, slot) => qmpLines(slot, lines)));
    };
    const nbdRun = async (given?: NbdCase[]) => {
      counts.nbd++;
      const several = 1 + (rng.chance(0.3) ? rng.int(4) : 0);
      const ks = given ?? Array.from({ length: several }, () => nbdCase(rng));
      history.push(JSON.stringify({ nbd: ks }));
      if (history.length > HISTORY) history.shift();
      const results = await withTimeout(Promise.all(ks.map((k) => runNbd(server.nbdPath, k, rng).catch((e: Error) => `client: ${e.message}`))), CASE_MS);
      if (results === 'timeout') problems.push(['nbd-hang', 'hang', `NBD case did not finish in ${CASE_MS} ms`]);
      else {
        for (const r of results) {
          if (r === undefined) outcomes['nbd:ok'] = (outcomes['nbd:ok'] ?? 0) + 1;
          else if (r.startsWith('client: connect') || r.startsWith('client: closed') || r.startsWith('client: timed out')) outcomes['nbd:dropped'] = (outcomes['nbd:dropped'] ?? 0) + 1;
          else problems.push(['nbd-reply', pattern(r), r]);
        }
      }
    };
    // Most cases one kind at a time; some both at once (exports, nodes and jobs changing under clients' I/O).
    const pick = rng.int(10);
    if (replay) {
      const e = replay.shift();
      if (e === undefined) {
        // The state the history left, for triage.
        for (const what of ['query-jobs', 'query-block-jobs', 'query-block-exports']) {
          health.send(`{"execute":"${what}"}\n`);
          console.log(`${what}: ${JSON.stringify(await health.next(HEALTH_MS)).slice(0, 2000)}`);
        }
        break;
      }
      if (e.qmp) await qmpCase([e.qmp]);
      else if (e.qmpParallel) await qmpCase(e.qmpParallel);
      else if (e.nbd) await nbdRun(e.nbd);
    } else if (pick < 5) await qmpCase();
    else if (pick < 8) await nbdRun();
    else await Promise.all([qmpCase(), nbdRun()]);

    // Health: alive, QMP answers, known reads back, stderr clean.
    let unhealthy = false;
    if (!server.exited) {
      health.send('{"execute":"query-named-block-nodes"}\n');
      const r = await health.next(HEALTH_MS);
      if (r === 'timeout' || r === 'closed' || r.error) {
        problems.push(['health-qmp', String(typeof r === 'string' ? r : r.error?.class), `query-named-block-nodes: ${JSON.stringify(r).slice(0, 300)}`]);
        unhealthy = true;
      } else if (Array.isArray(r.return)) {
        gen.seenNodes = (r.return as { 'node-name': string; file: string }[]).filter((n) => !n.file.endsWith('known.qcow2')).map((n) => n['node-name']);
      }
      const known = await withTimeout(knownReads(server.nbdPath).catch((e: Error) => `known: ${e.message}`), HEALTH_MS * 3);
      if (known !== undefined) {
        problems.push(['health-nbd', pattern(String(known)), String(known)]);
        unhealthy = true;
      }
    }
    await sleep(20);
    if (server.exited) {
      problems.push(['crash', firstFrame(server.stderr.slice(server.mark)) || 'exit', `server exited: ${server.stderr.slice(-2000)}`]);
      unhealthy = true;
    }
    const err = server.stderr.slice(server.mark);
    server.mark = server.stderr.length;
    if (BAD_STDERR.test(err)) problems.push(['stderr', firstFrame(err) || pattern(BAD_STDERR.exec(err)![0]), err.slice(0, 2000)]);
    for (const [k, key, summary] of problems) found(k, key, summary);
    if (cases % RSS_EVERY === 0) {
      rss.push(rssOf(server.child.pid!));
      process.stdout.write(`fuzz-serve: ${cases} cases, ${findings.length} findings, rss ${(rss[rss.length - 1]! / 2 ** 20).toFixed(0)} MiB\n`);
    }
    if (unhealthy) await restart();
  }
  health.close();
  for (const q of conns) q.close();
  await stopServer(server);
  fs.rmSync(root, { recursive: true, force: true });
  console.log('\n==== fuzz-serve summary ====');
  console.log(`seed ${seed}, cases ${cases} (QMP ${counts.qmp} with ${counts.commands} replies, NBD ${counts.nbd}), server restarts ${counts.restarts}`);
  console.log(`outcomes: ${JSON.stringify(Object.fromEntries(Object.entries(outcomes).sort()))}`);
  console.log(`distinct new findings: ${findings.length}`);
  for (const f of findings) console.log(`  ${f}`);
  if (rss.length > 0) console.log(`rss samples (MiB, every ${RSS_EVERY} cases, reset on restart): ${rss.map((r) => (r / 2 ** 20).toFixed(0)).join(' ')}`);
}

/** Differential mode: each QMP command to our serve and to qemu-storage-daemon; a different verdict is a finding. */
async function differential(): Promise<void> {
  const out = path.resolve(args.out!);
  fs.mkdirSync(out, { recursive: true });
  const seconds = Number(args.seconds);
  const seed = args.seed !== undefined ? Number(args.seed) : Date.now() & 0x7fffffff;
  const rng = new Rng(seed);
  const gen = new QmpGen(rng);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-fuzz-serve-'));
  console.log(`fuzz-serve --qemu: seed ${seed}, ${seconds} s, findings in ${out}`);
  const deadline = Date.now() + seconds * 1000;
  let runs = 0;
  let stop = false;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => (stop = true));
  const findings: string[] = [];
  const verdicts: Record<string, number> = {};
  let commands = 0;
  let restarts = 0;
  while (Date.now() < deadline && !stop) {
    const ours = await startServer(root, runs++, 'ours-qsd');
    const qemu = await startServer(root, runs++, 'qemu');
    const qa = await Qmp.connect(ours.qmpPath);
    const qb = await Qmp.connect(qemu.qmpPath);
    const history: string[] = [];
    let diverged = false;
    while (!diverged && Date.now() < deadline && !stop) {
      const cmd = gen.command(rng.pick(QMP_NAMES))!;
      if (cmd.arguments && rng.chance(0.35)) gen.mutate(cmd.arguments);
      const line = JSON.stringify(cmd);
      history.push(line);
      qa.send(`${line}\n`);
      qb.send(`${line}\n`);
      const [a, b] = await Promise.all([qa.next(CASE_MS), qb.next(CASE_MS)]);
      commands++;
      if (typeof a === 'string' || typeof b === 'string') {
        const dir = saveFinding(out, 'qmp-diff', `${cmd.execute}|${String(a)}|${String(b)}`, `${cmd.execute}: ours ${JSON.stringify(a).slice(0, 300)}, qemu ${JSON.stringify(b).slice(0, 300)}`, history, ours.stderr);
        if (dir) findings.push(dir);
        break;
      }
      const va = a.error ? 'error' : 'ok';
      const vb = b.error ? 'error' : 'ok';
      verdicts[`${va}/${vb}`] = (verdicts[`${va}/${vb}`] ?? 0) + 1;
      // Known differences that change no state: QSD has no `cont`; per-node statistics are not kept here.
      const known = cmd.execute === 'cont' || (cmd.execute === 'query-blockstats' && va === 'error');
      if (va !== vb && !known) {
        const key = `${cmd.execute}|${va}|${pattern(a.error?.desc ?? b.error?.desc ?? '')}`;
        const summary = `${cmd.execute}: ours ${JSON.stringify(a.error ?? a.return).slice(0, 300)}, qemu ${JSON.stringify(b.error ?? b.return).slice(0, 300)}`;
        const dir = saveFinding(out, 'qmp-diff', key, summary, history, ours.stderr);
        if (dir) {
          findings.push(dir);
          console.log(`fuzz-serve: new finding ${dir}`);
        }
        diverged = true;
      }
    }
    qa.close();
    qb.close();
    await stopServer(ours);
    await stopServer(qemu);
    restarts++;
  }
  fs.rmSync(root, { recursive: true, force: true });
  console.log('\n==== fuzz-serve --qemu summary ====');
  console.log(`seed ${seed}, ${commands} commands, ${restarts} server pairs, verdicts (ours/qemu) ${JSON.stringify(verdicts)}`);
  console.log(`distinct new findings: ${findings.length}`);
  for (const f of findings) console.log(`  ${f}`);
}

await (args.qemu ? differential() : main());
