// Host file-system helpers for the portable core. The browser build swaps this module for
// files.browser.ts (scripts/build-browser.ts), where there are no local files.
import fs from 'node:fs';
import path from 'node:path';
import { BlockError, fromErrno } from '../errors.js';

/** This build can open local files. */
export const HAS_LOCAL_FILES = true;

export const isAbsolutePath = (p: string): boolean => path.isAbsolute(p);
export const joinPath = (dir: string, name: string): string => path.join(dir, name);
export const dirName = (p: string): string => path.dirname(p);
export const fileExists = (p: string): boolean => fs.existsSync(p);

/** The canonical path (symlinks resolved), for telling two names of one file apart. */
export async function realPath(p: string): Promise<string> {
  // fs.promises read where used: node:fs/promises loads readline and the watchers, costly to start with
  return fs.promises.realpath(p);
}

/** Reads the first `n` bytes of a file (fewer if it is shorter). */
export async function readFileHead(filename: string, n: number): Promise<Uint8Array> {
  const fh = await fs.promises.open(filename, 'r').catch((e) => {
    throw fromErrno(e, `could not open '${filename}'`, { path: filename });
  });
  try {
    const b = new Uint8Array(n);
    const { bytesRead } = await fh.read(b, 0, n, 0);
    return b.subarray(0, bytesRead);
  } catch (e) {
    // e.g. EISDIR: a backing file name that names a directory
    throw fromErrno(e, `could not read '${filename}'`, { path: filename });
  } finally {
    await fh.close();
  }
}

export { BlockError };
