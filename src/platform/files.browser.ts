// The browser's stand-in for files.ts: there is no local file system, so local names are
// refused with a clear error; URLs (the http driver) work everywhere.
import { BlockError } from '../errors.js';

/** This build can open local files. */
export const HAS_LOCAL_FILES = false;

const noFiles = (p: string) => new BlockError('ENOTSUP', `'${p}': local files cannot be opened in a browser (use an http(s) URL or a memory node)`, { path: p });

export const isAbsolutePath = (p: string): boolean => p.startsWith('/');
export const joinPath = (dir: string, name: string): string => `${dir.replace(/\/+$/, '')}/${name}`;
export const dirName = (p: string): string => {
  const i = p.lastIndexOf('/');
  return i <= 0 ? (i === 0 ? '/' : '.') : p.slice(0, i);
};
export const fileExists = (_p: string): boolean => false;

export async function realPath(p: string): Promise<string> {
  throw noFiles(p);
}

export async function readFileHead(filename: string, _n: number): Promise<Uint8Array> {
  throw noFiles(filename);
}

export { BlockError };
