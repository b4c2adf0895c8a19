import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { patternBytes } from '../helpers/pattern-bytes.js';
import { type CrashChildArgs, crashWrite } from '../helpers/qcow2-crash-plan.js';
import { assertChecksClean, driveDifference, modelOfImage, openKind, requireQemuTools, waitForExit } from '../helpers/qcow2-judge.js';
import { type ImageKind, KINDS } from '../helpers/qcow2-kinds.js';
import type { DiskModel } from '../helpers/qcow2-model.js';

/**
 * A child process writes and flushes in a loop and is killed with SIGKILL at random moments;
 * after each kill the image must pass qemu-img check (leaks allowed: a crash may leak clusters)
 * and hold every write acknowledged by a completed flush. Then the next child continues on the
 * same image. SIGKILL loses no page cache: this judges what the driver had written (data and
 * metadata, in a consistent order) when it acknowledged a flush, not power-loss ordering.
 */

const available = requireQemuTools('qcow2 crash tests');
const ITERATIONS = process.env.QCOW2_CRASH_ITERATIONS === undefined ? undefined : Number(process.env.QCOW2_CRASH_ITERATIONS);
const SEED = Number(process.env.QCOW2_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
const CHILD = path.join(import.meta.dirname, '../helpers/qcow2-crash-child.ts');
const PER_ROUND = 4;
/** Children started ahead of their turn. */
const PRELOADED = 3;

let dir: string;
const layer = new BlockLayer();
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qcow2-crash-'));
});
/** Children not yet killed, ended when the file ends (also when a test failed midway). */
const live = new Set<{ dispose(): void }>();
afterAll(async () => {
  for (const c of live) c.dispose();
  await layer.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A small deterministic PRNG for the kill delays (the seed is printed on failure). */
function delays(seed: number): () => number {
  let x = seed | 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return 20 + ((x >>> 0) % 381);
  };
}

interface ChildRun {
  /** Writes with index < flushed were acknowledged by a completed flush. */
  flushed: number;
  /** How the child ended before being killed, if it did (an error: its stderr). */
  died?: string;
  /** With QCOW2_TESTS_VIA=qemu-nbd: the qemu-nbd the child started (it outlives the child a moment). */
  server?: number;
}

/** A child started ahead of its turn: it loads the library, then waits for its arguments on stdin. */
class WriterChild {
  private readonly child: ChildProcess;
  private out = '';
  private err = '';
  private flushed = 0;
  private server: number | undefined;
  private killed = false;
  private delayMs = 0;
  private afterFlush = false;
  private timer: NodeJS.Timeout | undefined;
  private settle: ((r: ChildRun) => void) | null = null;
  private ended: ChildRun | null = null;

  constructor() {
    this.child = spawn(process.execPath, ['--import', 'tsx', CHILD], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr!.on('data', (d: Buffer) => {
      this.err = (this.err + d.toString()).slice(-5000);
    });
    this.child.stdout!.on('data', (d: Buffer) => this.lines(d.toString()));
    this.child.on('error', (e) => this.end({ flushed: this.flushed, died: `could not start the child: ${e.message}` }));
    this.child.on('close', (code, signal) => {
      if (this.killed && signal === 'SIGKILL') this.end({ flushed: this.flushed, server: this.server });
      else this.end({ flushed: this.flushed, server: this.server, died: `child exited (code ${code}, signal ${signal}) before the kill:\n${this.err}` });
    });
  }

  /**
   * Sends the arguments; kills the child `delayMs` after it has the image open (or, with
   * `afterFlush`, after its first completed flush, so that on a busy machine some iterations
   * surely crash with acknowledged data); resolves when it is gone.
   */
  run(args: CrashChildArgs, delayMs: number, afterFlush: boolean): Promise<ChildRun> {
    this.flushed = args.start;
    this.delayMs = delayMs;
    this.afterFlush = afterFlush;
    return new Promise((resolve) => {
      if (this.ended) return resolve(this.ended);
      this.settle = resolve;
      this.child.stdin!.write(`${JSON.stringify(args)}\n`);
    });
  }

  /** Ends a child that never got its turn. */
  dispose(): void {
    if (this.ended) return;
    this.killed = true;
    this.child.kill('SIGKILL');
  }

  private lines(text: string): void {
    this.out += text;
    for (let nl = this.out.indexOf('\n'); nl >= 0; nl = this.out.indexOf('\n')) {
      const line = JSON.parse(this.out.slice(0, nl)) as { ready?: boolean; flushed?: number; server?: number };
      if (line.server !== undefined) this.server = line.server;
      this.out = this.out.slice(nl + 1);
      if (line.flushed !== undefined) this.flushed = line.flushed;
      if (this.timer === undefined && (this.afterFlush ? line.flushed !== undefined : line.ready)) {
        this.timer = setTimeout(() => {
          this.killed = true;
          this.child.kill('SIGKILL');
        }, this.delayMs);
      }
    }
  }

  private end(r: ChildRun): void {
    if (this.ended) return;
    this.ended = r;
    this.settle?.(r);
  }
}

/**
 * Checks the image content after a crash: bytes no unacknowledged write touched must equal the
 * durable model; bytes that one did touch may hold the old value or that write's data.
 */
function verifyAfterCrash(actual: DiskModel, durable: DiskModel, args: CrashChildArgs, flushed: number): string | null {
  const area = actual.read(0, args.area);
  const want = durable.read(0, args.area);
  const maybe: { offset: number; data: Buffer }[] = [];
  for (let i = flushed; i < flushed + args.perRound; i++) {
    const w = crashWrite(args, i);
    maybe.push({ offset: w.offset, data: patternBytes(w.dataSeed, w.length) });
  }
  for (let b = 0; b < args.area; b++) {
    if (area[b] === want[b]) continue;
    const explained = maybe.some((m) => b >= m.offset && b < m.offset + m.data.length && m.data[b - m.offset] === area[b]);
    if (!explained) {
      return `byte ${b} (0x${b.toString(16)}) is 0x${area[b].toString(16)}: neither the flushed value 0x${want[b].toString(16)} nor any write in flight (writes ${flushed}..${flushed + args.perRound - 1})`;
    }
  }
  // Nothing is written past the area: the rest must be exactly as before.
  const rest = actual.size - args.area;
  if (rest > 0 && !actual.read(args.area, rest).equals(durable.read(args.area, rest))) return `bytes past the written area (${args.area}) changed`;
  return null;
}

function applyWrites(model: DiskModel, args: CrashChildArgs, from: number, to: number): void {
  for (let i = from; i < to; i++) {
    const w = crashWrite(args, i);
    model.write(w.offset, patternBytes(w.dataSeed, w.length));
  }
}

const CRASH_KINDS: ImageKind[] = [KINDS.raw, KINDS['v3-64k'], KINDS['backing-qcow2'], KINDS['lazy-refcounts'], KINDS['extl2-64k']];

describe.skipIf(!available)('qcow2 writes survive SIGKILL: flushed writes stay, the image stays consistent', () => {
  for (const kind of CRASH_KINDS) {
    it(`${kind.name}: kills at random moments, each followed by check, verification and a new writer on the same image (seed ${SEED}; QCOW2_CRASH_SEED to repeat)`, async () => {
      const image = await kind.make(dir, kind.name);
      const scratch = path.join(dir, `${kind.name}.converted.raw`);
      let state = await modelOfImage(kind, image, scratch);
      const nextDelay = delays(SEED);
      let start = 0;
      let acknowledged = 0;
      const iterations = ITERATIONS ?? (kind.name === 'v3-64k' ? 25 : 6);
      // Children load (seconds on a busy machine) while earlier ones run and the image is judged.
      const ready: WriterChild[] = [];
      const refill = () => {
        while (ready.length < Math.min(PRELOADED, iterations)) {
          const c = new WriterChild();
          live.add(c);
          ready.push(c);
        }
      };
      refill();
      const began = Date.now();
      for (let iteration = 0; iteration < iterations; iteration++) {
        const where = `iteration ${iteration} (seed ${SEED})`;
        const args: CrashChildArgs = { image, format: kind.format, seed: SEED, start, area: Math.min(kind.size, 48 * kind.clusterSize), clusterSize: kind.clusterSize, perRound: PER_ROUND };
        const child = ready.shift()!;
        refill();
        const run = await child.run(args, nextDelay(), iteration % 2 === 1);
        live.delete(child);
        if (run.server !== undefined) await waitForExit(run.server);
        if (run.died !== undefined) throw new Error(`${where}: ${run.died}`);
        acknowledged += run.flushed - start;
        const durable = state.clone();
        applyWrites(durable, args, start, run.flushed);

        if (kind.lazyRefcounts) {
          // A dirty lazy-refcounts image is repaired on open (as QEMU does): judge it after our reopen.
          const d = await openKind(layer, kind, image);
          await d.close();
        }
        await assertChecksClean(kind, image, { allowLeaks: true, when: `after the kill of ${where}` });
        const actual = await modelOfImage(kind, image, scratch);
        const wrong = verifyAfterCrash(actual, durable, args, run.flushed);
        if (wrong !== null) throw new Error(`${where}: ${wrong}`);
        // Our driver must read what QEMU reads.
        const d = await openKind(layer, kind, image);
        try {
          const ours = await driveDifference(d, actual);
          if (ours !== null) throw new Error(`${where}: our reads differ from qemu-img convert after the crash: ${ours}`);
        } finally {
          await d.close();
        }
        state = actual;
        // Skip the indices that may have been in flight: the next child's writes are all new.
        start = run.flushed + PER_ROUND;
      }
      console.log(`crash test ${kind.name}: ${iterations} kills, ${acknowledged} writes acknowledged by flushes, ${Date.now() - began} ms`);
      // Guard against a vacuous pass: the children must have completed flushes.
      expect(acknowledged).toBeGreaterThan(0);
    }, 600_000);
  }
});
