/**
 * A guest that writes scattered sectors at places the test chose: the boot sector
 * tests/fixtures/guest/scattered-writes.asm, assembled here with a table of runs, booted by QEMU
 * (qemu-system-x86_64, TCG, SeaBIOS) from any -drive QEMU opens (an NBD export in the tests) or by
 * v86 from a blocklayer drive. The guest writes phase by phase and waits on COM1 between phases,
 * so a test decides what happens around each phase and knows every byte the guest wrote.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { V86, type V86Options } from 'v86';
import { haveProgram, ok } from './tools.js';
import { BIOS, baseOptions, GUEST_INCLUDES, VGA_BIOS } from './v86-boot.js';
import { Wakeups } from './wakeups.js';

export const SECTOR = 512;
export const GUEST_ASM = fileURLToPath(new URL('../fixtures/guest/scattered-writes.asm', import.meta.url));
/** Sectors the guest reads (from LBA 1) and sums before writing: must match the .asm. */
export const GUEST_READ_SECTORS = 16;
/** The BIOS call moves at most this many sectors through the guest's 64 KiB buffer. */
const MAX_RUN_SECTORS = 127;
/** The table sits in the boot sector after the code: this many runs and phase marks fit. */
const MAX_TABLE_ENTRIES = 18;

/** `count` sectors from `lba`, each filled from `seed` (see {@link guestSector}). */
export interface GuestRun {
  lba: number;
  count: number;
  seed: number;
}

/** The runs of each phase, in the order the guest writes them. */
export type GuestPhases = readonly (readonly GuestRun[])[];

/** Programs a QEMU guest test needs that this machine lacks (empty: none). */
export function missingForQemuGuest(): string[] {
  return [haveProgram('qemu-system-x86_64') ? '' : 'qemu-system-x86_64 (qemu-system-x86)', haveProgram('nasm') ? '' : 'nasm'].filter(Boolean);
}

/** Programs and files a v86 guest test needs that this machine lacks (empty: none). */
export function missingForV86Guest(): string[] {
  return [fs.existsSync(BIOS) && fs.existsSync(VGA_BIOS) ? '' : 'seabios', haveProgram('nasm') ? '' : 'nasm'].filter(Boolean);
}

/**
 * What `test` lacks to boot its QEMU guest and its v86 guest, each with the `extra` programs it
 * also runs. In CI a missing one fails the file (.ci/run installs them all); elsewhere it is logged.
 */
export function guestToolsMissing(test: string, extra: { qemu: string[]; v86: string[] }): { qemu: string[]; v86: string[] } {
  const lacking = (programs: string[]) => programs.filter((p) => !haveProgram(p));
  const found = { qemu: [...missingForQemuGuest(), ...lacking(extra.qemu)], v86: [...missingForV86Guest(), ...lacking(extra.v86)] };
  for (const [guest, missing] of [['QEMU', found.qemu], ['v86', found.v86]] as const) {
    if (missing.length === 0) continue;
    if (process.env.CI === 'true') throw new Error(`${missing.join(', ')} missing in CI for the ${guest} guest of ${test}: .ci/run must install them`);
    console.log(`${guest} guest ${test} skipped: missing ${missing.join(', ')}`);
  }
  return found;
}

/** The sector the guest writes at `lba` with `seed`: its LBA in bytes 0..3, then byte i = (i * 7 + seed) & 0xff. */
export function guestSector(lba: number, seed: number): Uint8Array {
  const s = new Uint8Array(SECTOR);
  new DataView(s.buffer).setUint32(0, lba, true);
  for (let i = 4; i < SECTOR; i++) s[i] = (i * 7 + seed) & 0xff;
  return s;
}

/** nasm source of the run table (writes.inc) the .asm includes. */
export function writesInclude(phases: GuestPhases): string {
  const lines = ['runs:'];
  let entries = 0;
  for (const phase of phases) {
    for (const r of phase) {
      if (!Number.isInteger(r.lba) || r.lba < 1 || r.lba > 0xffffffff) throw new Error(`guest run: LBA ${r.lba} (sector 0 is the boot sector)`);
      if (!Number.isInteger(r.count) || r.count < 1 || r.count > MAX_RUN_SECTORS) throw new Error(`guest run: count ${r.count} outside 1..${MAX_RUN_SECTORS}`);
      if (!Number.isInteger(r.seed) || r.seed < 0 || r.seed > 0xff) throw new Error(`guest run: seed ${r.seed} is not a byte`);
      lines.push(`  dd ${r.lba}`, `  db ${r.count}, ${r.seed}`);
    }
    lines.push('  dd 0', '  db 0, 0');
    entries += phase.length + 1;
  }
  lines.push('  dd 0', '  db 0xff, 0');
  if (entries + 1 > MAX_TABLE_ENTRIES) throw new Error(`guest: ${entries + 1} table entries, at most ${MAX_TABLE_ENTRIES} fit in the boot sector`);
  return `${lines.join('\n')}\n`;
}

/** Assembles the guest for `phases` in `dir`; returns its 512-byte boot sector. */
export async function assembleGuest(dir: string, phases: GuestPhases): Promise<Uint8Array> {
  fs.writeFileSync(path.join(dir, 'writes.inc'), writesInclude(phases));
  const out = path.join(dir, 'guest.bin');
  await ok('nasm', ['-f', 'bin', '-i', `${dir}/`, '-i', GUEST_INCLUDES, '-o', out, GUEST_ASM]);
  const sector = new Uint8Array(fs.readFileSync(out));
  if (sector.length !== SECTOR) throw new Error(`${GUEST_ASM} assembled to ${sector.length} bytes, expected ${SECTOR}`);
  return sector;
}

/** `disk` after the guest's phases before `upTo` (all of them by default), written in order: a new array. */
export function applyGuestWrites(disk: Uint8Array, phases: GuestPhases, upTo = phases.length): Uint8Array {
  const out = disk.slice();
  for (const phase of phases.slice(0, upTo)) {
    for (const r of phase) for (let i = 0; i < r.count; i++) out.set(guestSector(r.lba + i, r.seed), (r.lba + i) * SECTOR);
  }
  return out;
}

/** The byte ranges the guest writes, rounded out to `granularity` and merged: what a dirty bitmap must hold. */
export function guestGranules(phases: GuestPhases, granularity: number): { offset: number; length: number }[] {
  const granules = new Set<number>();
  for (const r of phases.flat()) {
    const first = Math.floor((r.lba * SECTOR) / granularity);
    const last = Math.floor(((r.lba + r.count) * SECTOR - 1) / granularity);
    for (let g = first; g <= last; g++) granules.add(g);
  }
  const out: { offset: number; length: number }[] = [];
  for (const g of [...granules].sort((a, b) => a - b)) {
    const prev = out.at(-1);
    if (prev !== undefined && prev.offset + prev.length === g * granularity) prev.length += granularity;
    else out.push({ offset: g * granularity, length: granularity });
  }
  return out;
}

/** The "SUM xxxx" line the guest prints when it read sectors 1..16 of `disk` right. */
export function guestSumLine(disk: Uint8Array): string {
  let sum = 0;
  for (let o = SECTOR; o < SECTOR * (1 + GUEST_READ_SECTORS); o++) sum = (sum + disk[o]!) & 0xffff;
  return `SUM ${sum.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** The line the guest prints after phase `n` (1-based). */
export const phaseLine = (n: number) => `PHASE ${n.toString(16).toUpperCase().padStart(2, '0')}`;

/** A running guest, either emulator. */
export interface Guest {
  /** Everything the guest printed on COM1 so far. */
  serial(): string;
  /** Resolves once the guest printed `text` (rejects after `timeoutMs`, or when the emulator ended without it). */
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  /** One byte on COM1: the guest starts its next phase. */
  proceed(): void;
  /** Waits for each remaining phase and lets the guest go on, up to DONE. */
  runToEnd(phases: number, timeoutMs?: number): Promise<void>;
  /** Ends the emulator (if it still runs) and waits for it. */
  stop(): Promise<void>;
}

/** Shared serial bookkeeping: text so far, waiters woken on every byte or at the end. */
class SerialLog {
  text = '';
  ended: string | undefined;
  private readonly wakeups = new Wakeups();

  push(s: string): void {
    this.text += s;
    this.wakeups.wake();
  }

  end(why: string): void {
    this.ended = why;
    this.wakeups.wake();
  }

  waitFor(text: string, timeoutMs: number, describe: () => string): Promise<void> {
    return this.wakeups.until(
      () => this.text.includes(text),
      timeoutMs,
      () => (this.ended === undefined ? undefined : new Error(`guest ended (${this.ended}) without printing ${JSON.stringify(text)}; ${describe()}`)),
      () => new Error(`guest: no ${JSON.stringify(text)} within ${timeoutMs} ms; ${describe()}`),
    );
  }
}

async function runToEnd(guest: Guest, phases: number, timeoutMs: number): Promise<void> {
  for (let n = 1; n <= phases; n++) {
    await guest.waitFor(phaseLine(n), timeoutMs);
    if (n < phases) guest.proceed();
  }
  await guest.waitFor('DONE', timeoutMs);
}

/** A QEMU guest: also how QEMU ended (the guest powers off after DONE: exit code 0). */
export interface QemuGuest extends Guest {
  /** QEMU's exit code (null when killed). */
  exited: Promise<number | null>;
  /** QEMU's stderr so far. */
  stderr(): string;
}

/**
 * Boots qemu-system-x86_64 (pc machine, TCG, SeaBIOS, no devices but the board's IDE) from
 * `drive`, a -drive option string such as `file=nbd+unix:///vm?socket=…,format=raw,if=ide`.
 * COM1 is QEMU's stdin/stdout.
 */
export function bootQemuGuest(drive: string): QemuGuest {
  const args = ['-machine', 'pc', '-accel', 'tcg', '-nodefaults', '-display', 'none', '-monitor', 'none', '-m', '32', '-no-reboot', '-serial', 'stdio', '-drive', drive];
  const child: ChildProcess = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const log = new SerialLog();
  let stderr = '';
  child.stdout!.setEncoding('latin1');
  child.stdout!.on('data', (s: string) => log.push(s));
  child.stderr!.on('data', (b: Buffer) => {
    stderr += b.toString();
  });
  // A write to a QEMU that already exited must not surface as an unhandled error.
  child.stdin!.on('error', () => {});
  const exited = new Promise<number | null>((resolve) => {
    child.on('error', (e) => {
      log.end(String(e));
      resolve(null);
    });
    child.on('exit', (code, signal) => {
      log.end(`QEMU exit ${code ?? signal}`);
      resolve(code);
    });
  });
  const describe = () => `serial ${JSON.stringify(log.text)}, stderr ${JSON.stringify(stderr.slice(-2000))}`;
  const guest: QemuGuest = {
    serial: () => log.text,
    stderr: () => stderr,
    exited,
    waitFor: (text, timeoutMs = 30_000) => log.waitFor(text, timeoutMs, describe),
    proceed: () => {
      child.stdin!.write('g');
    },
    runToEnd: (phases, timeoutMs = 30_000) => runToEnd(guest, phases, timeoutMs),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
  return guest;
}

/** Boots v86 (SeaBIOS, in this process) with `hda`, e.g. `toV86Disk(drive)`. */
export function bootV86Guest(hda: unknown): Guest {
  // v86's typings only list url/buffer images; it takes any object with get/set/load as-is.
  const emulator = new V86({ ...baseOptions(), hda: hda as V86Options['hda'], autostart: true });
  const log = new SerialLog();
  emulator.add_listener('serial0-output-byte', (byte: number) => log.push(String.fromCharCode(byte)));
  let stopped: Promise<void> | undefined;
  const describe = () => `serial ${JSON.stringify(log.text)}`;
  const guest: Guest = {
    serial: () => log.text,
    waitFor: (text, timeoutMs = 60_000) => log.waitFor(text, timeoutMs, describe),
    proceed: () => emulator.serial0_send('g'),
    runToEnd: (phases, timeoutMs = 60_000) => runToEnd(guest, phases, timeoutMs),
    stop: () => {
      stopped ??= emulator.destroy().then(() => log.end('v86 destroyed'));
      return stopped;
    },
  };
  return guest;
}
