// What the opfs driver is before its module loads (the browser build's stub, and the driver's own).
import * as z from 'zod';
import { builtOnce } from '../../node/lazy-driver.js';
import { sizeSchema } from '../../options/size.js';

/** Longest path accepted, and most components in it (OPFS itself has no documented limit). */
export const MAX_PATH_LENGTH = 4096;
export const MAX_PATH_COMPONENTS = 64;

/** `path` split into its names: no empty, `.` or `..` component, no backslash or NUL. */
export function pathComponents(path: string): string[] | string {
  const names = path.replace(/^\/+/, '').split('/');
  if (names.length > MAX_PATH_COMPONENTS) return `has more than ${MAX_PATH_COMPONENTS} components`;
  for (const n of names) {
    if (n === '' || n === '.' || n === '..') return `has an empty, '.' or '..' component`;
    if (/[\\\0]/.test(n)) return 'must not contain a backslash or NUL';
  }
  return names;
}

export const opfsFacts = {
  name: 'opfs',
  capabilities: { kind: 'protocol' },
  schema: builtOnce(() =>
    z
      .object({
        /** The file, inside navigator.storage.getDirectory(): `vms/a/disk.qcow2`. */
        path: z
          .string({ error: 'required' })
          .min(1, 'must not be empty')
          .max(MAX_PATH_LENGTH, `must be at most ${MAX_PATH_LENGTH} characters`)
          .superRefine((p, ctx) => {
            const r = pathComponents(p);
            if (typeof r === 'string') ctx.addIssue({ code: 'custom', message: r });
          }),
        /** Make the file (and its folders) when it is missing; a read-only open never does. */
        create: z.boolean().default(false),
        /** Length of a file this open creates (bytes or '8G'). */
        size: sizeSchema().default(0),
        /**
         * How to reach the file: `sync` (FileSystemSyncAccessHandle: only in a dedicated Worker, the
         * fast path), `async` (getFile()/createWritable(): anywhere, each commit rewrites a swap
         * copy of the file), `auto` (sync where there is one).
         */
        mode: z.enum(['auto', 'sync', 'async']).default('auto'),
        /** Web Locks on the path (flock's rule: one writer, or readers): `off` takes none. */
        locking: z.enum(['on', 'off']).default('on'),
      })
      .strict(),
  ),
} as const;

/** The opfs driver's own options, as a caller writes them. */
export interface OpfsNodeOptions {
  driver: 'opfs';
  nodeName?: string;
  readOnly?: boolean;
  path: string;
  create?: boolean;
  size?: number | string;
  mode?: 'auto' | 'sync' | 'async';
  locking?: 'on' | 'off';
}
