import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { REPLACE_PERMISSIONS, lockImage } from '../drivers/file/qemu-lock.js';
import { BlockError, fromErrno } from '../errors.js';

/** Exit codes of a command stopped by a signal, as a shell reports them (128 + signal number). */
const SIGNAL_EXIT: Record<'SIGINT' | 'SIGTERM', number> = { SIGINT: 130, SIGTERM: 143 };

/** Symlinks followed on the output path before giving up (Linux's own limit). */
const MAX_SYMLINKS = 40;

/** A command stopped by SIGINT or SIGTERM after it cleaned up; `exitCode` is what the shell expects. */
export class InterruptedError extends BlockError {
  readonly signal: 'SIGINT' | 'SIGTERM';
  readonly exitCode: number;

  constructor(signal: 'SIGINT' | 'SIGTERM', message: string) {
    super('ECANCELED', message);
    this.signal = signal;
    this.exitCode = SIGNAL_EXIT[signal];
  }
}

/** The temporary file a command writes; it becomes the target only when the command succeeds. */
export interface OutputFile {
  /** The target as given. */
  readonly target: string;
  /** The file the rename replaces (the target with symlinks of its last component followed). */
  readonly path: string;
  /** The temporary file beside it. */
  readonly tempPath: string;
  /** Aborted on SIGINT or SIGTERM: check it between steps. */
  readonly signal: AbortSignal;
  /** Writes all of `data` at `offset` (short writes continued); errors are BlockErrors naming the target. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Sets the file's length (sparse). */
  truncate(length: number): Promise<void>;
  /**
   * With {@link AtomicOutputOptions.siblings}: the temporary path of a new file that becomes
   * `name` (a base name) beside the target when the target does, and is removed if it does not.
   */
  sibling(name: string): Promise<string>;
}

/** Options of {@link writeAtomically}. */
export interface AtomicOutputOptions {
  /** Files the command reads: the target must not be one of them (same device and inode). */
  readonly inputs?: readonly string[];
  /** The command's input as the user named it (for messages, when the clash is a file it reads, e.g. a backing file). */
  readonly input?: string;
  /** Abort on SIGINT/SIGTERM, remove the temporary file and reject with {@link InterruptedError} (default true). */
  readonly handleSignals?: boolean;
  /**
   * The output may have sibling files ({@link OutputFile.sibling}): the temporary file is then
   * `tempPath` = a temporary directory beside the target + the target's own base name, so files
   * that name each other by base name (a vmdk descriptor and its extents) find each other before
   * the rename.
   */
  readonly siblings?: boolean;
}

/** The final path a write to `target` lands on: symlinks of the last component followed, also dangling ones. */
async function resolveTarget(target: string): Promise<string> {
  let p = path.resolve(target);
  for (let i = 0; ; i++) {
    let st: fs.Stats;
    try {
      st = await fsp.lstat(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return p;
      throw fromErrno(e, `could not examine '${target}'`, { path: target, field: 'output' });
    }
    if (!st.isSymbolicLink()) return p;
    if (i >= MAX_SYMLINKS) throw new BlockError('EINVAL', `'${target}': too many levels of symbolic links`, { path: target, field: 'output' });
    p = path.resolve(path.dirname(p), await fsp.readlink(p));
  }
}

async function statOrUndefined(p: string): Promise<fs.Stats | undefined> {
  try {
    return await fsp.stat(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fromErrno(e, `could not examine '${p}'`, { path: p });
  }
}

/** Refuses when the existing target is one of the inputs (compared by device and inode, so symlinks and hard links count). */
async function refuseInputs(target: string, resolved: string, st: fs.Stats, inputs: readonly string[], named?: string): Promise<void> {
  for (const input of inputs) {
    const s = await statOrUndefined(input);
    if (s && s.dev === st.dev && s.ino === st.ino) {
      const via = resolved !== path.resolve(target) ? ` (which is '${resolved}')` : '';
      const what = named === undefined || named === input ? `the input '${input}'` : `'${input}', read by the input '${named}'`;
      throw new BlockError('EINVAL', `refusing to write '${target}'${via}: it is ${what} and would be destroyed`, {
        path: target,
        field: 'output',
      });
    }
  }
}

/**
 * Opens the existing target and takes QEMU's locks for replacing it, so that a target any
 * process has open (QEMU, qemu-nbd, a blocklayer drive) is refused, as qemu-img refuses it:
 * renaming over it would leave that process writing into an orphaned file.
 */
async function lockTarget(target: string, resolved: string): Promise<FileHandle> {
  let h: FileHandle;
  try {
    h = await fsp.open(resolved, 'r');
  } catch (e) {
    throw fromErrno(e, `could not open '${target}'`, { path: target, field: 'output' });
  }
  try {
    await lockImage(h.fd, target, REPLACE_PERMISSIONS, 'auto', { field: 'output' });
  } catch (e) {
    await h.close();
    throw e;
  }
  return h;
}

/** Gives the new file the owner, group and mode of the one it replaces (a VM running as another user must still open its disk). */
async function keepOwnership(h: FileHandle, existing: fs.Stats, target: string): Promise<void> {
  const mine = await h.stat();
  try {
    // chown first: it clears the set-id bits that chmod then restores.
    if (mine.uid !== existing.uid || mine.gid !== existing.gid) await h.chown(existing.uid, existing.gid);
    await h.chmod(existing.mode & 0o7777);
  } catch (e) {
    throw fromErrno(e, `could not give the new '${target}' the owner (uid ${existing.uid}, gid ${existing.gid}) and mode (${(existing.mode & 0o7777).toString(8)}) of the file it replaces`, { path: target, field: 'output' });
  }
}

/**
 * A temporary name's random part. Not node:crypto's: loading it costs a short command (convert)
 * 36 more modules, and a name needs no secret, since the file is created with O_EXCL ('wx'),
 * which never opens what someone else put there.
 */
function tempSuffix(): string {
  return `${process.pid.toString(16)}${Math.floor(Math.random() * 0x1_0000_0000).toString(16).padStart(8, '0')}`;
}

/**
 * Runs `write` on a temporary file beside `target` and renames it onto the target only when
 * `write` resolves (after fsync), so the target is either the complete new content or what it
 * was before: never truncated early, never a silent partial file. Refuses a target that is one
 * of `inputs` and one any process has open (QEMU's locks); a replaced target's owner, group and
 * mode carry over to the new file (which is a new inode: hard links to the old one keep the old content). On failure or SIGINT/SIGTERM
 * the temporary file is removed and the error says so.
 */
export async function writeAtomically<T>(target: string, write: (out: OutputFile) => Promise<T>, options: AtomicOutputOptions = {}): Promise<T> {
  const resolved = await resolveTarget(target);
  const existing = await statOrUndefined(resolved);
  if (existing && !existing.isFile()) {
    throw new BlockError('EINVAL', `'${target}' is not a regular file: only regular files are written (through a temporary file)`, { path: target, field: 'output' });
  }
  if (existing) await refuseInputs(target, resolved, existing, options.inputs ?? [], options.input);
  const lock = existing ? await lockTarget(target, resolved) : undefined;

  const tempName = path.join(path.dirname(resolved), `.${path.basename(resolved)}.blocklayer-${tempSuffix()}.tmp`);
  // With siblings, tempName is a directory and what is removed on failure.
  const tempPath = options.siblings ? path.join(tempName, path.basename(resolved)) : tempName;
  const siblings = new Siblings(target, resolved, tempName, options.inputs ?? [], options.input);
  let handle: FileHandle | undefined;
  const controller = new AbortController();
  let caught: 'SIGINT' | 'SIGTERM' | undefined;
  const untouched = existing ? `'${target}' left unchanged` : `'${target}' not created`;
  const onSignal = (sig: 'SIGINT' | 'SIGTERM') => {
    if (caught) {
      // A second signal: the work did not stop in time; clean up now and leave.
      try {
        fs.rmSync(tempName, { force: true, recursive: true });
        siblings.removeRenamedSync();
        process.stderr.write(`interrupted again; removed partial output '${tempName}'; ${untouched}\n`);
      } finally {
        process.exit(SIGNAL_EXIT[sig]);
      }
    }
    caught = sig;
    controller.abort(new InterruptedError(sig, `interrupted by ${sig}`));
  };
  const onInt = () => onSignal('SIGINT');
  const onTerm = () => onSignal('SIGTERM');
  const handleSignals = options.handleSignals ?? true;
  if (handleSignals) {
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
  }
  const ctx = { path: target, field: 'output' };
  try {
    try {
      if (options.siblings) await fsp.mkdir(tempName, 0o700);
      handle = await fsp.open(tempPath, 'wx', existing ? existing.mode & 0o7777 : 0o666);
    } catch (e) {
      throw fromErrno(e, `could not create '${tempPath}' for '${target}'`, ctx);
    }
    const h = handle;
    if (existing) await keepOwnership(h, existing, target);
    const out: OutputFile = {
      target,
      path: resolved,
      tempPath,
      signal: controller.signal,
      async write(offset, data) {
        controller.signal.throwIfAborted();
        let done = 0;
        while (done < data.length) {
          let n: number;
          try {
            ({ bytesWritten: n } = await h.write(data, done, data.length - done, offset + done));
          } catch (e) {
            throw fromErrno(e, `could not write '${target}' at ${offset + done}`, { ...ctx, offset: offset + done, length: data.length - done });
          }
          if (n === 0) throw new BlockError('EIO', `could not write '${target}' at ${offset + done}: no progress`, { ...ctx, offset: offset + done });
          done += n;
        }
      },
      async truncate(length) {
        try {
          await h.truncate(length);
        } catch (e) {
          throw fromErrno(e, `could not set the size of '${target}' to ${length}`, { ...ctx, length });
        }
      },
      async sibling(name) {
        if (!options.siblings) throw new BlockError('ENOTSUP', `'${target}' is written without sibling files (writeAtomically's siblings option)`, { ...ctx, field: 'siblings' });
        controller.signal.throwIfAborted();
        return siblings.add(name);
      },
    };
    const result = await write(out);
    controller.signal.throwIfAborted();
    // Two flushes make the output atomic and durable, and no more are needed (qemu-img, which
    // writes in place, makes the first only): (1) the file's data before the rename, or a crash
    // could leave the target's name on a file whose data never reached the disk; fdatasync, as
    // qemu-img's, since it writes the size and block map the data needs (only the times are
    // left to the journal); (2) the directory after the rename (syncDir), or the new name may
    // not survive a crash. Siblings get (1) each before any rename; their renames share (2).
    try {
      await h.datasync();
      handle = undefined;
      await h.close();
    } catch (e) {
      throw fromErrno(e, `could not write '${target}'`, ctx);
    }
    await siblings.sync();
    controller.signal.throwIfAborted();
    // Siblings first: the target (which names them) appears last, when they all are in place.
    await siblings.rename();
    try {
      await fsp.rename(tempPath, resolved);
    } catch (e) {
      throw fromErrno(e, `could not rename '${tempPath}' to '${target}'`, ctx);
    }
    if (options.siblings) await fsp.rmdir(tempName).catch(() => {});
    await syncDir(path.dirname(resolved));
    return result;
  } catch (e) {
    if (handle) await handle.close().catch(() => {});
    let removed: string;
    try {
      await fsp.rm(tempName, { force: true, recursive: true });
      await siblings.removeRenamed();
      removed = `removed partial output '${tempName}'; ${untouched}`;
    } catch (rmError) {
      removed = `could not remove partial output '${tempPath}': ${(rmError as Error).message}`;
    }
    if (caught) throw new InterruptedError(caught, `interrupted; ${removed}`);
    const err = fromErrno(e, `could not write '${target}'`, ctx);
    throw new BlockError(err.code, `${err.message} (${removed})`, {
      ...(err.node === undefined ? {} : { node: err.node }),
      ...(err.path === undefined ? {} : { path: err.path }),
      ...(err.field === undefined ? {} : { field: err.field }),
      ...(err.offset === undefined ? {} : { offset: err.offset }),
      ...(err.length === undefined ? {} : { length: err.length }),
      cause: e,
    });
  } finally {
    if (handleSignals) {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
    }
    if (lock) await lock.close().catch(() => {});
    await siblings.unlock();
  }
}

/** Makes the rename durable; file systems that cannot fsync a directory are tolerated. */
async function syncDir(dir: string): Promise<void> {
  let h: FileHandle | undefined;
  try {
    h = await fsp.open(dir, 'r');
    await h.sync();
  } catch {
    // Best effort: the data itself is already synced.
  } finally {
    await h?.close().catch(() => {});
  }
}

/** Sibling files one output may have (vmdk's twoGbMaxExtent extents of a 64 TiB disk are 32,768). */
const MAX_SIBLINGS = 65536;

/** A name for a file in the output's directory: no directory part, not `.` or `..`. */
function isBaseName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !/[/\0]/.test(name) && name.length <= 255;
}

/**
 * The sibling files of one atomic output: each made empty in the temporary directory, the file
 * it will replace refused or locked as the target is, renamed beside the target before it.
 */
class Siblings {
  private readonly files = new Map<string, { temp: string; final: string; existed: boolean }>();
  private readonly locks: FileHandle[] = [];
  /** Final paths renamed into place that did not exist before: removed if the output fails after all. */
  private readonly renamed: string[] = [];

  constructor(
    private readonly target: string,
    private readonly resolved: string,
    private readonly tempDir: string,
    private readonly inputs: readonly string[],
    private readonly input: string | undefined,
  ) {}

  async add(name: string): Promise<string> {
    const ctx = { path: this.target, field: 'sibling' };
    if (typeof name !== 'string' || !isBaseName(name) || name === path.basename(this.resolved)) {
      throw new BlockError('EINVAL', `sibling: '${String(name)}' is not a file name beside '${this.target}' other than its own`, ctx);
    }
    if (this.files.has(name)) throw new BlockError('EINVAL', `sibling: '${name}' was made already`, ctx);
    if (this.files.size >= MAX_SIBLINGS) throw new BlockError('EINVAL', `sibling: more than ${MAX_SIBLINGS} files beside '${this.target}'`, ctx);
    const named = path.join(path.dirname(this.resolved), name);
    const final = await resolveTarget(named);
    const existing = await statOrUndefined(final);
    if (existing && !existing.isFile()) throw new BlockError('EINVAL', `'${named}' is not a regular file: only regular files are written (through a temporary file)`, { path: named, field: 'output' });
    if (existing) {
      await refuseInputs(named, final, existing, this.inputs, this.input);
      this.locks.push(await lockTarget(named, final));
    }
    const temp = path.join(this.tempDir, name);
    let h: FileHandle;
    try {
      h = await fsp.open(temp, 'wx', existing ? existing.mode & 0o7777 : 0o666);
    } catch (e) {
      throw fromErrno(e, `could not create '${temp}' for '${named}'`, { path: named, field: 'output' });
    }
    try {
      if (existing) await keepOwnership(h, existing, named);
    } finally {
      await h.close();
    }
    this.files.set(name, { temp, final, existed: existing !== undefined });
    return temp;
  }

  /** Makes every sibling's data durable before any is renamed (fdatasync: see writeAtomically). */
  async sync(): Promise<void> {
    for (const f of this.files.values()) {
      let h: FileHandle | undefined;
      try {
        h = await fsp.open(f.temp, 'r+');
        await h.datasync();
      } catch (e) {
        throw fromErrno(e, `could not write '${f.final}'`, { path: f.final, field: 'output' });
      } finally {
        await h?.close().catch(() => {});
      }
    }
  }

  async rename(): Promise<void> {
    for (const f of this.files.values()) {
      try {
        await fsp.rename(f.temp, f.final);
      } catch (e) {
        throw fromErrno(e, `could not rename '${f.temp}' to '${f.final}'`, { path: f.final, field: 'output' });
      }
      if (!f.existed) this.renamed.push(f.final);
    }
  }

  async removeRenamed(): Promise<void> {
    for (const p of this.renamed) await fsp.rm(p, { force: true });
  }

  removeRenamedSync(): void {
    for (const p of this.renamed) fs.rmSync(p, { force: true });
  }

  async unlock(): Promise<void> {
    for (const h of this.locks) await h.close().catch(() => {});
  }
}
