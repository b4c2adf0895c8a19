import fs from 'node:fs/promises';
import path from 'node:path';
import { type OutputFile, writeAtomically } from './atomic-output.js';
import { errnoText, fallocateErrorCode, reserveSpace } from '../drivers/file/fallocate.js';
import { probeFormat } from '../drivers/qcow2/index.js';
import { BlockError, fromErrno } from '../errors.js';
import { BlockLayer } from '../layer.js';
import { PROBE_DRIVER } from '../node/probe.js';
import type { BlockNode } from '../node/node.js';
import {
  type CreateOptionsInput,
  type FormatCreateOptionsInput,
  formatCreateOptionsSchema,
  parseCreateOptions,
  parseFormatOptions,
  qcow2Settings,
  roundToSectors,
} from '../options/create.js';
import { parseOptions } from '../options/zod-error.js';
import type { BlockDriver, CreateSiblings } from '../node/driver.js';
import { planQcow2, type Qcow2Plan } from '../drivers/qcow2/create-layout.js';

export { type CreateOptionsInput, createOptionsSchema, type FormatCreateOptionsInput, PREALLOCATION_MODES, type Preallocation } from '../options/create.js';

/** What was created. */
export interface CreatedImage {
  /** Format of the new image (`qcow2`, `raw`, or the format driver that made it). */
  format: string;
  /** Its virtual size in bytes (rounded up to whole sectors). */
  virtualSize: number;
  /** Length of the image file (or of the used part of the node). */
  fileLength: number;
  /** Format of its backing file, when it has one. */
  backingFormat?: string;
}

/** How {@link createImage} runs (not image options). */
export interface CreateFileOptions {
  /**
   * Stop on SIGINT/SIGTERM, remove the temporary file and reject with InterruptedError (the
   * CLI's behaviour); default false: a library leaves signals to its host.
   */
  handleSignals?: boolean;
  /** The layer the backing file and the new image open in (its clock, its drivers); a private one, closed afterwards, by default. */
  layer?: BlockLayer;
}

const ZERO_CHUNK = 1 << 20;

/** Runs `use` with the given layer, or with a private one closed afterwards. */
async function withLayer<T>(given: BlockLayer | undefined, use: (layer: BlockLayer) => Promise<T>): Promise<T> {
  const layer = given ?? new BlockLayer();
  try {
    return await use(layer);
  } finally {
    if (given === undefined) await layer.close();
  }
}

/** Size and format of a backing file (format probed as it opens when not given), resolved against `baseDir`. */
async function inspectBacking(name: string, baseDir: string, format: string | undefined, given?: BlockLayer): Promise<{ path: string; format: string; size: number }> {
  const file = path.resolve(baseDir, name);
  try {
    await fs.access(file);
  } catch (e) {
    throw new BlockError('ENOENT', `backing: could not open backing file '${file}': ${(e as Error).message}`, { field: 'backing', path: file, cause: e });
  }
  return withLayer(given, async (layer) => {
    let node: BlockNode;
    try {
      // force-share as QEMU's bdrv_img_create: the chain below may be open read-write (an external snapshot of a running disk).
      node = await layer.openNode({ driver: format ?? PROBE_DRIVER, readOnly: true, file: { driver: 'file', filename: file, readOnly: true, locking: 'off', forceShare: true } });
    } catch (e) {
      const fmt = format ?? (await probeFormat(file).catch(() => 'raw'));
      if (e instanceof BlockError) throw new BlockError(e.code, `backing: '${file}' (${fmt}): ${e.message}`, { field: 'backing', path: file, cause: e });
      throw e;
    }
    try {
      return { path: file, format: node.driver.name, size: node.length };
    } finally {
      await node.unref();
    }
  });
}

/** Validates options, applies the backing file's size and format, and lays out the image. */
async function prepareQcow2(input: unknown, baseDir: string, layer?: BlockLayer) {
  const o = parseCreateOptions(input);
  let size = o.size;
  let backingFormat = o.backingFormat;
  let backingPath: string | undefined;
  if (o.backing !== undefined) {
    const b = await inspectBacking(o.backing, baseDir, o.backingFormat, layer);
    size ??= b.size;
    if (b.format !== 'qcow2' && b.format !== 'raw') {
      throw new BlockError('ENOTSUP', `backing: '${b.path}' is a ${b.format} image; a qcow2 overlay here takes a qcow2 or raw backing file`, { field: 'backingFormat', path: b.path });
    }
    backingFormat = b.format;
    backingPath = b.path;
  }
  const settings = qcow2Settings({ ...o, ...(backingFormat ? { backingFormat } : {}) }, size!);
  let plan: Qcow2Plan;
  try {
    plan = planQcow2(settings);
  } catch (e) {
    if (e instanceof BlockError) throw e;
    throw new BlockError('EINVAL', `size: cannot lay out a qcow2 image of ${settings.size} bytes: ${(e as Error).message}`, { field: 'size', cause: e });
  }
  return { o, settings, plan, backingPath };
}

/** Writes a planned layout onto a node; `zeroed` says the node already reads as zeros. */
async function writePlan(node: BlockNode, plan: Qcow2Plan, zeroed: boolean): Promise<void> {
  if (node.length < plan.fileLength) {
    throw new BlockError('ENOSPC', `node '${node.name}' has ${node.length} bytes; the new image needs ${plan.fileLength}`, { node: node.name, length: plan.fileLength });
  }
  // Preallocated data clusters and unwritten table space must read as zeros.
  if (!zeroed) await node.writeZeroes(0, plan.fileLength);
  for (const w of plan.writes) await node.write(w.offset, w.data);
  await node.flush();
}

async function writeZeros(write: (offset: number, data: Uint8Array) => Promise<void>, start: number, end: number): Promise<void> {
  const zeros = new Uint8Array(Math.min(ZERO_CHUNK, Math.max(0, end - start)));
  for (let pos = start; pos < end; pos += zeros.length) await write(pos, zeros.subarray(0, Math.min(zeros.length, end - pos)));
}

/**
 * Why preallocation=falloc failed, from the error number posix_fallocate returned: a full disk
 * is ENOSPC (as qemu-img's "No space left on device"), a file system that cannot reserve is ENOTSUP.
 */
export function preallocationError(errno: number, file: string): BlockError {
  const code = fallocateErrorCode(errno);
  const context = { field: 'preallocation', path: file };
  if (code === 'ENOTSUP') return new BlockError('ENOTSUP', `preallocation: could not reserve space in '${file}' with fallocate (use preallocation=full)`, context);
  return new BlockError(code, `preallocation: could not reserve space in '${file}': ${errnoText(errno)}`, context);
}

/** Reserves [start, start+length) of an open file, as qemu-img's preallocation=falloc does (posix_fallocate). */
async function reserve(fd: number, file: string, start: number, length: number): Promise<void> {
  const errno = await reserveSpace(fd, start, length);
  if (errno !== 0) throw preallocationError(errno, file);
}

/** Reserves [start, end) of a file, as qemu-img's preallocation=falloc does. */
async function fallocateRange(file: string, start: number, end: number): Promise<void> {
  if (end <= start) return;
  const h = await fs.open(file, 'r+');
  try {
    await reserve(h.fd, file, start, end - start);
  } finally {
    await h.close();
  }
}

/**
 * Creates a qcow2 image on an existing node (a memory node, an rbd image, a file node): the
 * layout qemu-img create would write into a new file, at offset 0 of the node, which must be
 * at least as long as the layout (else ENOSPC). Relative backing names are probed against the
 * current directory; an external data file is only named in the header, not created.
 * preallocation=falloc needs a file: use {@link createImage}.
 */
export async function createQcow2OnNode(node: BlockNode, options: Omit<CreateOptionsInput, 'format'> & { format?: 'qcow2' }): Promise<CreatedImage> {
  const { settings, plan } = await prepareQcow2({ ...options, format: 'qcow2' }, process.cwd());
  if (settings.preallocation === 'falloc' && plan.preallocate) {
    throw new BlockError('ENOTSUP', `preallocation: falloc needs a file; on a node use metadata or full`, { field: 'preallocation', node: node.name });
  }
  await writePlan(node, plan, false);
  if (plan.preallocate && settings.preallocation === 'full') {
    // writePlan zeroed the range already; 'full' asks for real zeros, which writeZeroes may leave as holes.
    await writeZeros((o, d) => node.write(o, d), plan.preallocate.start, plan.preallocate.end);
    await node.flush();
  }
  return { format: 'qcow2', virtualSize: settings.size, fileLength: plan.fileLength, ...(settings.backingFormat ? { backingFormat: settings.backingFormat } : {}) };
}

/**
 * Creates an image file like `qemu-img create`. An existing file is replaced, as qemu-img
 * does, but only when the new image is complete: it is written under a temporary name beside
 * the target and renamed over it (on failure the temporary file is removed and the target is
 * left as it was). A file the image would read (its backing file) is never replaced. An
 * external data file is created (or truncated to the new size, as qemu-img does) beside the
 * image, and removed again if it did not exist before and the image cannot be made.
 */
export async function createImage(file: string, options: CreateOptionsInput | FormatCreateOptionsInput, how: CreateFileOptions = {}): Promise<CreatedImage> {
  const baseDir = path.dirname(path.resolve(file));
  const format = (options as { format?: unknown } | undefined)?.format;
  const handleSignals = how.handleSignals ?? false;
  if (format === 'raw') return createRaw(file, options as CreateOptionsInput, handleSignals);
  if (typeof format === 'string' && format !== 'qcow2') return createWithDriver(file, options, baseDir, how);
  const { settings, plan, backingPath } = await prepareQcow2(options, baseDir, how.layer);
  const dataPath = settings.dataFile === undefined ? undefined : path.resolve(baseDir, settings.dataFile);
  let dataCreated = false;
  try {
    await writeAtomically(
      file,
      async (out) => {
        await out.truncate(plan.fileLength);
        if (dataPath !== undefined) {
          const existed = await fs.stat(dataPath).then(
            () => true,
            () => false,
          );
          await createRawFile(dataPath, plan.dataFileLength ?? settings.size, settings.preallocation);
          // Only a data file this call brought into being is removed again on failure.
          dataCreated = !existed;
        }
        if (plan.preallocate && settings.preallocation === 'falloc') await fallocateRange(out.tempPath, plan.preallocate.start, plan.preallocate.end);
        if (plan.preallocate && settings.preallocation === 'full') await writeZeros((o, d) => out.write(o, d), plan.preallocate.start, plan.preallocate.end);
        await withLayer(how.layer, async (layer) => {
          const node = await layer.openNode({ driver: 'file', filename: out.tempPath, locking: 'off' });
          try {
            await writePlan(node, plan, true);
          } finally {
            await node.unref();
          }
        });
      },
      { inputs: backingPath ? [backingPath] : [], handleSignals },
    );
  } catch (e) {
    if (dataCreated && dataPath !== undefined) await fs.rm(dataPath, { force: true }).catch(() => {});
    throw e;
  }
  return { format: 'qcow2', virtualSize: settings.size, fileLength: plan.fileLength, ...(settings.backingFormat ? { backingFormat: settings.backingFormat } : {}) };
}

/** A raw file of `size` bytes: sparse, reserved (falloc) or written with zeros (full); metadata is the same as off. */
async function createRawFile(file: string, size: number, preallocation: string): Promise<void> {
  let h: fs.FileHandle;
  try {
    h = await fs.open(file, 'w');
  } catch (e) {
    throw fromErrno(e, `could not create '${file}'`, { path: file });
  }
  try {
    await h.truncate(size);
    if (preallocation === 'falloc' && size > 0) await reserve(h.fd, file, 0, size);
    if (preallocation === 'full') {
      await writeZeros(async (o, d) => void (await h.write(d, 0, d.length, o)), 0, size);
    }
  } finally {
    await h.close();
  }
}

async function createRaw(file: string, options: CreateOptionsInput, handleSignals: boolean): Promise<CreatedImage> {
  const o = parseCreateOptions(options);
  const size = roundToSectors(o.size!);
  await writeAtomically(
    file,
    async (out) => {
      await out.truncate(size);
      if (o.preallocation === 'falloc') await fallocateRange(out.tempPath, 0, size);
      if (o.preallocation === 'full') await writeZeros((off, d) => out.write(off, d), 0, size);
    },
    { handleSignals },
  );
  return { format: 'raw', virtualSize: size, fileLength: size };
}

/** The driver of `format` in `layer`, if it creates images; else an EINVAL naming the formats that can be created. */
export function creatableFormat(layer: BlockLayer, format: string, field = 'format'): BlockDriver & { create: NonNullable<BlockDriver['create']> } {
  const driver = layer.drivers.has(format) ? layer.drivers.get(format) : undefined;
  if (driver?.create && driver.capabilities.kind === 'format') return driver as BlockDriver & { create: NonNullable<BlockDriver['create']> };
  const known = ['raw', 'qcow2', ...creatableFormats(layer)];
  throw new BlockError('EINVAL', `${field}: '${format}' is not a format images can be created in (known: ${known.join(', ')})`, { field });
}

/** Names of the format drivers in `layer` that create images themselves (besides qcow2 and raw). */
export function creatableFormats(layer: BlockLayer): string[] {
  return [...layer.drivers.list()].filter((d) => d.create && d.capabilities.kind === 'format' && d.name !== 'qcow2' && d.name !== 'raw').map((d) => d.name);
}

/**
 * createImage for a format whose driver creates images (`driver.create`): options checked by its
 * schema first, then the image laid out by the driver on a file node over the temporary file,
 * renamed over the target when complete.
 */
async function createWithDriver(file: string, input: unknown, baseDir: string, how: CreateFileOptions): Promise<CreatedImage> {
  const o = parseOptions(formatCreateOptionsSchema, input);
  return withLayer(how.layer, async (layer) => {
    const driver = creatableFormat(layer, o.format);
    const formatOptions = parseFormatOptions(driver.create.schema, o.formatOptions);
    const backing = o.backing === undefined ? undefined : await inspectBacking(o.backing, baseDir, o.backingFormat, layer);
    const size = o.size ?? backing!.size;
    let virtualSize = 0;
    let fileLength = 0;
    await writeAtomically(
      file,
      async (out) => {
        const node = await layer.openNode({ driver: 'file', filename: out.tempPath, locking: 'off' });
        try {
          virtualSize = await driver.create.create(node, size, formatOptions, backing && { name: o.backing!, format: backing.format, size: backing.size, path: backing.path }, createSiblings(layer, out));
          out.signal.throwIfAborted();
          fileLength = node.length;
        } finally {
          await node.unref();
        }
      },
      { inputs: backing ? [backing.path] : [], handleSignals: how.handleSignals ?? false, siblings: true },
    );
    return { format: driver.name, virtualSize, fileLength, ...(backing ? { backingFormat: backing.format } : {}) };
  });
}

/** A creator's sibling files (vmdk's extents) as files of an atomic output (`siblings: true`), opened in `layer`. */
export function createSiblings(layer: BlockLayer, out: OutputFile): CreateSiblings<BlockNode> {
  return {
    async create(name) {
      const filename = await out.sibling(name);
      return layer.openNode({ driver: 'file', filename, locking: 'off' });
    },
  };
}
