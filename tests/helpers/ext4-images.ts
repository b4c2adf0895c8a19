import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import ext2fs from 'ext2fs';
import { expect } from 'vitest';
import { DriveDisk } from '../../src/adapters/file-disk.js';
import type { Drive } from '../../src/index.js';
import { prngU32 } from '../../src/bench/prng.js';
import { haveProgram, ok, run } from './tools.js';

/** e2fsprogs, for building ext4 images (mkfs.ext4 -d) and checking them (e2fsck, debugfs). */
export const E2FS_PROGRAMS = ['mkfs.ext4', 'e2fsck', 'debugfs'];

/** Whether e2fsprogs is there; in CI its absence is an error (.ci/run installs it), elsewhere a printed skip. */
export function haveE2fsprogs(what: string): boolean {
  const missing = E2FS_PROGRAMS.filter((p) => !haveProgram(p));
  if (missing.length === 0) return true;
  if (process.env.CI === 'true') throw new Error(`${missing.join(', ')} missing in CI: .ci/run must install e2fsprogs`);
  console.log(`${what} skipped: ${missing.join(', ')} not found (apt-get install e2fsprogs)`);
  return false;
}

/** Files of the test tree (path relative to its root) with their sizes: a few KiB to a few MiB, nested. */
const TREE: ReadonlyArray<[string, number]> = [
  ['hello.txt', 13],
  ['empty', 0],
  ['small.bin', 3 * 1024 + 7],
  ['docs/readme.md', 17 * 1024],
  ['docs/deep/a/b/c/leaf.bin', 40_000],
  ['data/one-meg.bin', 1 << 20],
  ['data/odd.bin', 2 * 1024 * 1024 + 12_345],
  ['data/more/three.bin', 3 * 1024 * 1024 - 1],
  ['data/more/tiny', 1],
];

function seededBytes(seed: number, length: number): Buffer {
  const next = prngU32(seed);
  const out = Buffer.alloc(length);
  let i = 0;
  for (; i + 4 <= length; i += 4) out.writeUInt32LE(next(), i);
  const last = next();
  for (let k = 0; i < length; i++, k++) out[i] = (last >>> (8 * k)) & 0xff;
  return out;
}

export const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

/** Writes the seeded tree under `root`; returns its files' sha256 by absolute in-image path ("/docs/readme.md"). */
export function writeTree(root: string, seed: number): Map<string, string> {
  const hashes = new Map<string, string>();
  TREE.forEach(([rel, size], i) => {
    const file = path.join(root, rel);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const data = seededBytes(seed * 1000 + i, size);
    fs.writeFileSync(file, data);
    hashes.set(`/${rel}`, sha256(data));
  });
  return hashes;
}

/** Builds a 32 MiB ext4 image holding `tree` (mkfs.ext4 -d). */
export async function mkfsExt4(tree: string, image: string): Promise<void> {
  await ok('mkfs.ext4', ['-F', '-q', '-d', tree, image, '32M']);
}

type Ext2Promises = Awaited<ReturnType<typeof ext2fs.mount>>['promises'];

/** A whole file through ext2fs as bytes (its readFile always decodes as utf8, so read through a descriptor). */
export async function readBytes(fsp: Ext2Promises, file: string): Promise<Buffer> {
  const { size } = await fsp.stat(file);
  const { fd } = await fsp.open(file, 'r');
  try {
    const data = Buffer.alloc(size);
    let done = 0;
    while (done < size) {
      const { bytesRead } = await fsp.read(fd, data.subarray(done), 0, size - done, done);
      if (bytesRead === 0) throw new Error(`${file}: ext2fs read ended at ${done} of ${size} bytes`);
      done += bytesRead;
    }
    return data;
  } finally {
    await fsp.close(fd);
  }
}

/** Every regular file under `dir` (lost+found left out) with its sha256, read through ext2fs. */
export async function hashTree(fsp: Ext2Promises, dir = '/'): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of await fsp.readdir(dir)) {
    const full = dir === '/' ? `/${name}` : `${dir}/${name}`;
    if (full === '/lost+found') continue;
    const st = await fsp.stat(full);
    if (st.isDirectory()) {
      for (const [p, h] of await hashTree(fsp, full)) out.set(p, h);
    } else {
      const data = await readBytes(fsp, full);
      expect(data.length, full).toBe(st.size);
      out.set(full, sha256(data));
    }
  }
  return out;
}

/**
 * Mounts a read-only drive through ext2fs over a DriveDisk and checks every file against
 * `expected`. ext2fs writes access times as it reads: the read-only disk keeps them in memory.
 */
export async function expectTreeOnDrive(drive: Drive, expected: Map<string, string>): Promise<void> {
  const disk = new DriveDisk(drive);
  const found = await ext2fs.withMountedDisk(disk, 0, async ({ promises: fsp }) => hashTree(fsp));
  expect(new Map([...found].sort())).toEqual(new Map([...expected].sort()));
  expect(drive.stats().wrOperations).toBe(0);
  expect(disk.knownChunks.length).toBeGreaterThan(0);
}

/** What {@link writeThroughExt2fs} adds to a filesystem. */
export const NEW_FILE = { path: '/newfile', text: 'written through ext2fs over a blocklayer drive\n' };
export const NEW_DIR = '/newdir';
export const NEW_BLOB = { path: '/newdir/blob.bin', data: seededBytes(4242, 300_000 + 17) };

/**
 * Creates a file, a directory and a file in it through ext2fs on a writable drive; with `trim`,
 * also discards the free blocks (ext2fs trim: discards through the disk); umounts, flushes and
 * closes the drive.
 */
export async function writeThroughExt2fs(drive: Drive, { trim = false } = {}): Promise<void> {
  const disk = new DriveDisk(drive);
  try {
    await ext2fs.withMountedDisk(disk, 0, async ({ promises: fsp }) => {
      await fsp.writeFile(NEW_FILE.path, NEW_FILE.text);
      await fsp.mkdir(NEW_DIR);
      await fsp.writeFile(NEW_BLOB.path, NEW_BLOB.data);
      expect(sha256(await readBytes(fsp, NEW_BLOB.path))).toBe(sha256(NEW_BLOB.data));
      if (trim) {
        await fsp.unlink('/data/one-meg.bin');
        await fsp.trim();
        expect(drive.stats().unmapOperations).toBeGreaterThan(0);
        expect(disk.getDiscardedChunks().length).toBeGreaterThan(0);
      }
    });
  } catch (e) {
    // ext2fs reports every disk failure as EIO: name the drive's own error.
    if (disk.lastError === null) throw e;
    throw new Error(`${(e as Error).message}; the drive's last error: ${String(disk.lastError)}`, { cause: e });
  }
  await disk.flush();
  expect(drive.stats().wrOperations).toBeGreaterThan(0);
  await drive.close();
}

/** Checks a raw ext4 image with e2fsprogs after {@link writeThroughExt2fs}: clean fsck, new files there, an old one intact. */
export async function expectWrittenImage(image: string, scratch: string, original: Map<string, string>): Promise<void> {
  const fsck = await run('e2fsck', ['-fn', image]);
  expect(fsck.code, `e2fsck -fn ${image}: ${fsck.stdout}${fsck.stderr}`).toBe(0);
  expect(await ok('debugfs', ['-R', `cat ${NEW_FILE.path}`, image])).toBe(NEW_FILE.text);
  const dumped = path.join(scratch, 'dumped.bin');
  for (const [inImage, hash] of [[NEW_BLOB.path, sha256(NEW_BLOB.data)], ['/data/odd.bin', original.get('/data/odd.bin')]] as const) {
    fs.rmSync(dumped, { force: true });
    await ok('debugfs', ['-R', `dump ${inImage} ${dumped}`, image]);
    expect(sha256(fs.readFileSync(dumped)), inImage).toBe(hash);
  }
  const listing = await ok('debugfs', ['-R', `ls -l ${NEW_DIR}`, image]);
  expect(listing).toContain('blob.bin');
}
