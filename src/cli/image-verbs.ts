import { BITMAP_HELP, CHECK_HELP, COMPARE_HELP, CONVERT_HELP, CREATE_HELP, INFO_HELP, MAP_HELP, REBASE_HELP, RESIZE_HELP, SNAPSHOT_HELP } from './help.js';

/** A verb: runs with its own arguments and returns an exit code. */
export type Run = (args: string[]) => Promise<number>;

/**
 * A verb of the `blocklayer` command. `load`: its module, imported only when the verb runs
 * (start-up loads nothing else: `blocklayer info` must not pay for convert's or serve's imports);
 * `help`: its usage line, what it does, its options (serve's lives in its module).
 */
export interface Verb {
  load: () => Promise<Run>;
  help: string | (() => Promise<string>);
}

/**
 * The verbs that inspect, change or copy one image and exit, as qemu-img's do. Scripts run them
 * often, so the installed command starts them from a script of their own (scripts/build-cli.ts:
 * src/cli/image-main.ts), without the code of the long-running verbs (serve, bench, commit) that
 * the command's main script (src/cli/main.ts) adds. convert is one of them: its whole run is
 * often shorter than a second, and the main script's extra code is start-up it would pay.
 */
export const IMAGE_VERBS = {
  info: { load: async () => (await import('./info.js')).infoCommand, help: INFO_HELP },
  map: { load: async () => (await import('./map.js')).mapCommand, help: MAP_HELP },
  check: { load: async () => (await import('./check.js')).checkCommand, help: CHECK_HELP },
  convert: { load: async () => (await import('./convert.js')).convertCommand, help: CONVERT_HELP },
  create: { load: async () => (await import('./create.js')).createCommand, help: CREATE_HELP },
  bitmap: { load: async () => (await import('./bitmap.js')).bitmapCommand, help: BITMAP_HELP },
  resize: { load: async () => (await import('./resize.js')).resizeCommand, help: RESIZE_HELP },
  snapshot: { load: async () => (await import('./snapshot.js')).snapshotCommand, help: SNAPSHOT_HELP },
  compare: { load: async () => (await import('./compare.js')).compareCommand, help: COMPARE_HELP },
  rebase: { load: async () => (await import('./rebase.js')).rebaseCommand, help: REBASE_HELP },
} satisfies Record<string, Verb>;
