#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import nodeModule from 'node:module';
import { BENCH_HELP, COMMIT_HELP } from './help.js';
import { IMAGE_VERBS, type Verb } from './image-verbs.js';
import { printLine } from './print.js';
import { helpOf, runVerb } from './run-verb.js';

// Node 22.1+ keeps the compiled code of the verb's modules on disk for the next start (a no-op on Node 20).
(nodeModule as { enableCompileCache?: () => unknown }).enableCompileCache?.();

const { info, map, check, convert, create, bitmap, resize, snapshot, compare, rebase } = IMAGE_VERBS;

/** Every verb of the `blocklayer` command, in the order of its help: the image verbs and the long-running ones. */
const VERBS: Record<string, Verb> = {
  info,
  map,
  check,
  convert,
  create,
  commit: { load: async () => (await import('./commit.js')).commitCommand, help: COMMIT_HELP },
  bench: { load: async () => (await import('./bench.js')).benchCommand, help: BENCH_HELP },
  serve: { load: async () => (await import('./serve.js')).serveCommand, help: async () => (await import('./serve.js')).SERVE_HELP },
  bitmap,
  resize,
  snapshot,
  compare,
  rebase,
};

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
  return runVerb(verb, entry, rest);
}

process.exitCode = await main(process.argv.slice(2));
