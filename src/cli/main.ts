#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import nodeModule from 'node:module';
import { BlockError } from '../errors.js';
import { BENCH_HELP, CHECK_HELP, COMMIT_HELP, CONVERT_HELP, CREATE_HELP, INFO_HELP, MAP_HELP } from './help.js';
import { BITMAP_HELP } from './help.js';
import { RESIZE_HELP } from './help.js';
import { SNAPSHOT_HELP } from './help.js';
import { COMPARE_HELP, REBASE_HELP } from './help.js';
import { printLine } from './print.js';

// Node 22.1+ keeps the compiled code of the verb's modules on disk for the next start (a no-op on Node 20).
(nodeModule as { enableCompileCache?: () => unknown }).enableCompileCache?.();

/** A verb: runs with its own arguments and returns an exit code. */
type Run = (args: string[]) => Promise<number>;

/**
 * The verbs of the `blocklayer` command. `load`: its module, imported only when the verb runs
 * (start-up loads nothing else: `blocklayer info` must not pay for convert's or serve's imports);
 * `help`: its usage line, what it does, its options (serve's lives in its module).
 */
const VERBS: Record<string, { load: () => Promise<Run>; help: string | (() => Promise<string>) }> = {
  info: { load: async () => (await import('./info.js')).infoCommand, help: INFO_HELP },
  map: { load: async () => (await import('./map.js')).mapCommand, help: MAP_HELP },
  check: { load: async () => (await import('./check.js')).checkCommand, help: CHECK_HELP },
  convert: { load: async () => (await import('./convert.js')).convertCommand, help: CONVERT_HELP },
  create: { load: async () => (await import('./create.js')).createCommand, help: CREATE_HELP },
  commit: { load: async () => (await import('./commit.js')).commitCommand, help: COMMIT_HELP },
  bench: { load: async () => (await import('./bench.js')).benchCommand, help: BENCH_HELP },
  serve: { load: async () => (await import('./serve.js')).serveCommand, help: async () => (await import('./serve.js')).SERVE_HELP },
  bitmap: { load: async () => (await import('./bitmap.js')).bitmapCommand, help: BITMAP_HELP },
  resize: { load: async () => (await import('./resize.js')).resizeCommand, help: RESIZE_HELP },
  snapshot: { load: async () => (await import('./snapshot.js')).snapshotCommand, help: SNAPSHOT_HELP },
  compare: { load: async () => (await import('./compare.js')).compareCommand, help: COMPARE_HELP },
  rebase: { load: async () => (await import('./rebase.js')).rebaseCommand, help: REBASE_HELP },
};

/** A verb's help text, loading serve's module for its own. */
async function helpOf(entry: (typeof VERBS)[string]): Promise<string> {
  return typeof entry.help === 'string' ? entry.help : entry.help();
}

/** The version in package.json (two levels up from src/cli and from dist/cli). */
export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** `blocklayer --help`: each verb's usage line and what it does, then the global flags. */
async function topHelp(): Promise<string> {
  const helps = await Promise.all(Object.values(VERBS).map(helpOf));
  const verbs = helps.map((help) => {
    const [usage, what] = help.split('\n');
    return `  ${usage.replace(/^usage: /, '')}\n      ${what}`;
  });
  return [
    'usage: blocklayer COMMAND [options]',
    "QEMU's block layer for Node.js: qemu-img's verbs, a benchmark and an NBD server.",
    '',
    'commands:',
    ...verbs,
    '',
    "  blocklayer COMMAND -h, --help   a command's options",
    '  blocklayer -V, --version        the version',
    '  blocklayer -h, --help           this help',
  ].join('\n');
}

/** Whether the arguments ask for help (-h or --help before a `--`). */
function asksHelp(args: string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '-h' || a === '--help') return true;
  }
  return false;
}

/**
 * node:util parseArgs' errors as one line naming the verb and the option: "unknown option '--x'",
 * "option '-f, --format <value>' argument missing", pointing at the verb's --help.
 */
function argumentError(verb: string, e: unknown): string | undefined {
  const code = (e as { code?: unknown }).code;
  if (typeof code !== 'string' || !code.startsWith('ERR_PARSE_ARGS_')) return undefined;
  const msg = (e as Error).message;
  const unknown = /^Unknown option '([^']*)'/.exec(msg);
  const what = unknown ? `unknown option '${unknown[1]}'` : msg.split('. ')[0].replace(/^\w/, (c) => c.toLowerCase());
  return `blocklayer ${verb}: ${what} (see 'blocklayer ${verb} --help')`;
}

export async function main(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === undefined) {
    // as qemu-img with no arguments
    console.error("blocklayer: Not enough arguments\nTry 'blocklayer --help' for more information");
    return 1;
  }
  if (verb === '-h' || verb === '--help') {
    printLine(await topHelp());
    return 0;
  }
  if (verb === '-V' || verb === '--version') {
    printLine(`blocklayer version ${version()}`);
    return 0;
  }
  if (verb === '__iothread') {
    // serve's iothread, when the command runs as one bundled script: the thread starts it with this argument (src/iothread/iothread.ts).
    (await import('../iothread/worker-main.js')).runIothread();
    return 0;
  }
  const entry = Object.hasOwn(VERBS, verb) ? VERBS[verb] : undefined;
  if (!entry) {
    console.error(`blocklayer: unknown command '${verb}' (commands: ${Object.keys(VERBS).join(', ')}; see 'blocklayer --help')`);
    return 1;
  }
  if (asksHelp(rest)) {
    printLine(await helpOf(entry));
    return 0;
  }
  try {
    const run = await entry.load();
    return await run(rest);
  } catch (e) {
    // Stopped by a signal after cleaning up: say what was removed, exit as the shell expects (130, 143).
    const { InterruptedError } = await import('../tools/atomic-output.js');
    if (e instanceof InterruptedError) {
      console.error(`blocklayer ${verb}: ${e.message}`);
      return e.exitCode;
    }
    const bad = argumentError(verb, e);
    if (bad !== undefined) {
      console.error(bad);
      return 1;
    }
    // One clear line, no stack: the message names the field, file or offset.
    const msg = e instanceof BlockError ? `${e.code}: ${e.message}` : (e as Error).message;
    console.error(`blocklayer ${verb}: ${msg}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
