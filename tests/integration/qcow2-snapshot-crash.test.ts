import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { haveQemuTools } from '../helpers/qemu-images.js';

/**
 * A child process creates, applies and deletes internal snapshots (writing in between) in a
 * loop and is SIGKILLed at a random moment; then qemu-img check must find no corruption (leaked
 * clusters are allowed, as after a crash of QEMU), and every snapshot in the table must read
 * (qemu-img convert -l) as the guest view its name records. The next child goes on with the
 * same image. SIGKILL keeps the page cache: this judges the order of the writes, not power loss.
 */

const available = haveQemuTools();
if (!available && process.env.CI === 'true') throw new Error('qemu-img missing in CI');
const CHILD = path.join(import.meta.dirname, '../helpers/qcow2-snapshot-crash-child.ts');
const ROUNDS = Number(process.env.QCOW2_SNAPSHOT_CRASH_ROUNDS ?? 10);
/** Children started ahead of their turn. */
const PRELOADED = 3;
const SEED = Number(process.env.QCOW2_SNAPSHOT_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));

let dir: string;
const children = new Set<ChildProcess>();
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-snapshot-crash-'));
});
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A child that has loaded the library; `go` hands it the image and resolves once it opened it (or rejects with its stderr). */
interface Loaded {
  child: ChildProcess;
  go(image: string, seed: number): Promise<void>;
}

function load(): Promise<Loaded> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  let err = '';
  let out = '';
  let wake = () => {};
  let ended: Error | undefined;
  child.stderr!.on('data', (d: Buffer) => {
    err = (err + d.toString()).slice(-4000);
  });
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    wake();
  });
  child.on('close', (code, signal) => {
    ended = new Error(`child ended (code ${code}, signal ${signal}) before the kill:\n${err}`);
    wake();
  });
  const until = (word: string) =>
    new Promise<void>((resolve, reject) => {
      const test = () => {
        if (out.includes(word)) resolve();
        else if (ended) reject(ended);
      };
      wake = test;
      test();
    });
  return until('"loaded"').then(() => ({
    child,
    go: (image, seed) => {
      child.stdin!.write(`${image} ${seed}\n`);
      return until('"ready"');
    },
  }));
}

function kill(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.removeAllListeners('close');
    child.stdout!.removeAllListeners('data');
    child.on('close', () => {
      children.delete(child);
      resolve();
    });
    child.kill('SIGKILL');
  });
}

describe.skipIf(!available)('qcow2 internal snapshots survive SIGKILL at random moments', () => {
  it(`${ROUNDS} rounds of create/apply/delete, killed at random: qemu-img check finds no corruption, every snapshot reads as recorded (seed ${SEED})`, async () => {
    const img = path.join(dir, 'crash.qcow2');
    expect(spawnSync('qemu-img', ['create', '-f', 'qcow2', '-o', 'cluster_size=4k', img, '1M']).status).toBe(0);
    let x = SEED | 1;
    const delay = () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return 30 + ((x >>> 0) % 400);
    };
    let leaks = 0;
    // The next children load while this one runs.
    const ahead: Promise<Loaded>[] = [];
    for (let k = 0; k < Math.min(PRELOADED, ROUNDS); k++) ahead.push(load());
    for (let round = 0; round < ROUNDS; round++) {
      const loaded = await ahead.shift()!;
      if (round + PRELOADED < ROUNDS) ahead.push(load());
      await loaded.go(img, SEED + round);
      await new Promise((r) => setTimeout(r, delay()));
      await kill(loaded.child);
      const r = spawnSync('qemu-img', ['check', '--output=json', img], { encoding: 'utf8' });
      const verdict = JSON.parse(r.stdout) as Record<string, number>;
      expect({ round, corruptions: verdict.corruptions ?? 0, errors: verdict['check-errors'] ?? 0 }, r.stderr).toEqual({ round, corruptions: 0, errors: 0 });
      leaks += verdict.leaks ?? 0;
      const info = JSON.parse(spawnSync('qemu-img', ['info', '--output=json', img], { encoding: 'utf8' }).stdout) as { snapshots?: { name: string }[] };
      for (const s of info.snapshots ?? []) {
        const out = path.join(dir, 'snap.raw');
        expect(spawnSync('qemu-img', ['convert', '-O', 'raw', '-l', `snapshot.name=${s.name}`, img, out]).status).toBe(0);
        const hash = createHash('sha1').update(fs.readFileSync(out)).digest('hex').slice(0, 16);
        expect(`${s.name.split('-')[0]}-${hash}`, `round ${round}`).toBe(s.name);
      }
    }
    console.log(`snapshot crash: ${ROUNDS} rounds, seed ${SEED}, ${leaks} leaked clusters in all`);
  }, 120_000);
});
