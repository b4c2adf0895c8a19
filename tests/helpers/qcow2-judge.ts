import { spawn } from 'node:child_process';
import fs from 'node:fs';
import type { BlockLayer, Drive } from '../../src/index.js';
import type { ImageKind } from './qcow2-kinds.js';
import { DiskModel, firstDifference } from './qcow2-model.js';
import { haveProgram, ok, run } from './tools.js';

/**
 * What judges a written image from outside: qemu-img check, qemu-img convert compared with a
 * model, and qemu-io writes. Shared by the property, crash and alternation tests.
 */

/** True when qemu-img and qemu-io exist; in CI their absence is an error, elsewhere a printed skip. */
export function requireQemuTools(what: string): boolean {
  const available = haveProgram('qemu-img') && haveProgram('qemu-io');
  if (!available && process.env.CI === 'true') throw new Error('qemu-img/qemu-io missing in CI: .ci/run must install qemu-utils');
  if (!available) console.log(`${what} skipped: install qemu-utils (apt-get install qemu-utils) to run them`);
  return available;
}

/**
 * Opens an image of that kind read-write through the public API. With
 * QCOW2_TESTS_VIA=qemu-nbd, qcow2 images are opened through QEMU's own qcow2 driver instead
 * (qemu-nbd serving the image, our nbd driver as client): a writer known to be right, to show
 * that the harness (image kinds, model, checks) passes when the driver is right.
 */
export function openKind(layer: BlockLayer, kind: Pick<ImageKind, 'format'>, image: string): Promise<Drive> {
  if (process.env.QCOW2_TESTS_VIA === 'qemu-nbd' && kind.format === 'qcow2') return openViaQemuNbd(layer, image);
  return layer.openDrive({ driver: kind.format, file: { driver: 'file', filename: image } });
}

/** Whether overlapping requests in flight together land in order of arrival for this kind as opened by {@link openKind}. */
export function ordersOverlappingWrites(kind: ImageKind): boolean {
  // QEMU does not order overlapping requests from one client (only its own read-modify-write).
  return kind.ordersOverlappingWrites && !(process.env.QCOW2_TESTS_VIA === 'qemu-nbd' && kind.format === 'qcow2');
}

/** The qemu-nbd process behind a drive opened through it (the crash test waits for it to end). */
export const qemuNbdPids = new WeakMap<Drive, number>();

/** Waits until a process has ended (an orphaned qemu-nbd flushes and exits after its client died). */
export async function waitForExit(pid: number, timeoutMs = 30_000): Promise<void> {
  for (let waited = 0; waited < timeoutMs; waited += 20) {
    let state: string;
    try {
      state = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] ?? '';
    } catch {
      return;
    }
    if (state === 'Z') return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`process ${pid} is still running after ${timeoutMs} ms`);
}

async function openViaQemuNbd(layer: BlockLayer, image: string): Promise<Drive> {
  const socket = `${image}.nbd.sock`;
  fs.rmSync(socket, { force: true });
  // Without --persistent, qemu-nbd exits (after flushing and closing the image) when the client disconnects.
  const server = spawn('qemu-nbd', ['-f', 'qcow2', '--discard=unmap', '--cache=writeback', '-k', socket, image], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  server.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<void>((resolve) => server.on('exit', () => resolve()));
  for (let waited = 0; !fs.existsSync(socket); waited += 10) {
    if (server.exitCode !== null || waited > 20_000) throw new Error(`qemu-nbd did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  // The socket file appears at bind(), a moment before listen(): retry a refused connection.
  let drive: Drive | undefined;
  for (let attempt = 0; drive === undefined; attempt++) {
    try {
      drive = await layer.openDrive({ driver: 'nbd', server: { type: 'unix', path: socket } });
    } catch (e) {
      if (attempt > 200 || server.exitCode !== null) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  if (server.pid !== undefined) qemuNbdPids.set(drive, server.pid);
  const close = drive.close.bind(drive);
  // The image is judged right after close: wait until qemu-nbd has let go of it.
  drive.close = async () => {
    await close();
    await exited;
  };
  return drive;
}

export interface CheckResult {
  /** qemu-img check's exit code: 0 clean, 2 corruptions, 3 leaks only, 63 format without checks. */
  code: number | null;
  corruptions: number;
  leaks: number;
  checkErrors: number;
  /** The JSON (or the error text) as printed, for failure messages. */
  report: string;
}

/** `qemu-img check --output=json` (with `-r all` when asked); raw images report clean. */
export async function qemuCheck(kind: ImageKind, image: string, repair = false): Promise<CheckResult> {
  if (kind.format === 'raw') return { code: 0, corruptions: 0, leaks: 0, checkErrors: 0, report: '(raw: nothing to check)' };
  const r = await run('qemu-img', ['check', '--output=json', ...(repair ? ['-r', 'all'] : []), '-f', 'qcow2', image]);
  const report = `exit ${r.code}\n${r.stdout}${r.stderr}`;
  let json: { corruptions?: number; leaks?: number; 'check-errors'?: number } = {};
  try {
    json = JSON.parse(r.stdout);
  } catch {
    return { code: r.code, corruptions: -1, leaks: -1, checkErrors: -1, report };
  }
  return { code: r.code, corruptions: json.corruptions ?? 0, leaks: json.leaks ?? 0, checkErrors: json['check-errors'] ?? 0, report };
}

/** Throws with qemu-img check's JSON unless the image has no corruption (and no leak unless allowed). */
export async function assertChecksClean(kind: ImageKind, image: string, opts: { allowLeaks?: boolean; when?: string } = {}): Promise<CheckResult> {
  const c = await qemuCheck(kind, image);
  const leaksOk = opts.allowLeaks ? true : c.leaks === 0;
  const codeOk = c.code === 0 || (opts.allowLeaks === true && c.code === 3);
  if (c.corruptions !== 0 || c.checkErrors !== 0 || !leaksOk || !codeOk) {
    throw new Error(`qemu-img check of ${image}${opts.when ? ` ${opts.when}` : ''}: ${c.corruptions} corruptions, ${c.leaks} leaks, ${c.checkErrors} check errors\n${c.report}`);
  }
  return c;
}

/** Runs qemu-io commands on the image (its own format). */
export function qemuIo(kind: ImageKind, image: string, commands: string[]): Promise<string> {
  return ok('qemu-io', ['-f', kind.format, ...commands.flatMap((c) => ['-c', c]), image]);
}

/** QEMU's view of the image as a (sparse) raw file at `out`; the caller removes it. */
export async function convertToRaw(kind: ImageKind, image: string, out: string): Promise<void> {
  await ok('qemu-img', ['convert', '-f', kind.format, '-O', 'raw', image, out]);
}

/**
 * Reads a sparse raw file by its data extents only (as `qemu-img map` finds them with
 * SEEK_DATA): holes read zeros by definition, and reading 500 MiB of holes costs ~1 s.
 */
async function sparseReader(file: string): Promise<{ read: (offset: number, length: number) => Buffer; close: () => void; size: number }> {
  const extents = (JSON.parse(await ok('qemu-img', ['map', '-f', 'raw', '--output=json', file])) as { start: number; length: number; data: boolean }[]).filter((e) => e.data);
  const fd = fs.openSync(file, 'r');
  return {
    size: fs.fstatSync(fd).size,
    read(offset, length) {
      const buf = Buffer.alloc(length);
      for (const e of extents) {
        const from = Math.max(offset, e.start);
        const to = Math.min(offset + length, e.start + e.length);
        if (from < to) fs.readSync(fd, buf, from - offset, to - from, from);
      }
      return buf;
    },
    close: () => fs.closeSync(fd),
  };
}

/** The image's guest view as QEMU reads it, as a model (the starting point of every test). */
export async function modelOfImage(kind: ImageKind, image: string, scratch: string): Promise<DiskModel> {
  await convertToRaw(kind, image, scratch);
  const file = await sparseReader(scratch);
  try {
    const model = new DiskModel(kind.size);
    const step = 4 << 20;
    for (let o = 0; o < kind.size; o += step) model.write(o, file.read(o, Math.min(step, kind.size - o)));
    return model;
  } finally {
    file.close();
    fs.rmSync(scratch, { force: true });
  }
}

/** Null when `qemu-img convert -O raw` of the image equals the model byte for byte, else where it differs. */
export async function convertedDifference(kind: ImageKind, image: string, model: DiskModel, scratch: string): Promise<string | null> {
  await convertToRaw(kind, image, scratch);
  const file = await sparseReader(scratch);
  try {
    if (file.size !== model.size) return `qemu-img convert made ${file.size} bytes, the model has ${model.size}`;
    return await firstDifference(model, file.read);
  } finally {
    file.close();
    fs.rmSync(scratch, { force: true });
  }
}

/** Null when our drive reads the model everywhere, else where it differs. */
export function driveDifference(drive: Drive, model: DiskModel): Promise<string | null> {
  if (drive.length !== model.size) return Promise.resolve(`drive is ${drive.length} bytes, the model ${model.size}`);
  return firstDifference(model, (o, n) => drive.read(o, n));
}
