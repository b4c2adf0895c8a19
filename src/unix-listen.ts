import { stat } from 'node:fs/promises';
import path from 'node:path';

/**
 * The real cause of a failed listen on a Unix socket `file`. libuv reports ENOENT from bind(2)
 * as EACCES (for Windows' sake), so a missing directory reads as "permission denied": when the
 * error is EACCES and the directory is missing (or not a directory), that is returned instead.
 * Any other error comes back as it is.
 */
export async function unixListenCause(error: unknown, file: string): Promise<unknown> {
  if ((error as NodeJS.ErrnoException | null)?.code !== 'EACCES') return error;
  const dir = path.dirname(path.resolve(file));
  let problem: { code: 'ENOENT' | 'ENOTDIR'; text: string } | null = null;
  try {
    if (!(await stat(dir)).isDirectory()) problem = { code: 'ENOTDIR', text: `${dir} is not a directory` };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') problem = { code, text: `no such directory ${dir}` };
    else if (code === 'ENOTDIR') problem = { code, text: `${dir}: a component of the path is not a directory` };
  }
  if (problem === null) return error;
  return Object.assign(new Error(problem.text), { code: problem.code, path: file });
}
