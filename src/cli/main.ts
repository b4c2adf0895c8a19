#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { BlockError } from '../errors.js';
import { InterruptedError } from '../atomic-output.js';
import { BENCH_HELP, benchCommand } from './bench.js';
import { CHECK_HELP, checkCommand } from './check.js';
import { COMMIT_HELP, commitCommand } from './commit.js';
import { CONVERT_HELP, convertCommand } from './convert.js';
import { CREATE_HELP, createCommand } from './create.js';
import { INFO_HELP, infoCommand } from './info.js';
import { MAP_HELP, mapCommand } from './map.js';
import { SERVE_HELP, serveCommand } from './serve.js';

/** The verbs of the `blocklayer` command; each takes its own arguments and returns an exit code. `help`: its usage line, what it does, its options. */
const VERBS: Record<string, { run: (args: string[]) => Promise<number>; help: string }> = {
  info: { run: infoCommand, help: INFO_HELP },
  map: { run: mapCommand, help: MAP_HELP },
  check: { run: checkCommand, help: CHECK_HELP },
  convert: { run: convertCommand, help: CONVERT_HELP },
  create: { run: createCommand, help: CREATE_HELP },
  commit: { run: commitCommand, help: COMMIT_HELP },
  bench: { run: benchCommand, help: BENCH_HELP },
  serve: { run: serveCommand, help: SERVE_HELP },
};

/** The version in package.json (two levels up from src/cli and from dist/cli). */
export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** `blocklayer --help`: each verb's usage line and what it does, then the global flags. */
function topHelp(): string {
  const verbs = Object.values(VERBS).map((e) => {
    const [usage, what] = e.help.split('\n');
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
    console.log(topHelp());
    return 0;
  }
  if (verb === '-V' || verb === '--version') {
    console.log(`blocklayer version ${version()}`);
    return 0;
  }
  const entry = Object.hasOwn(VERBS, verb) ? VERBS[verb] : undefined;
  if (!entry) {
    console.error(`blocklayer: unknown command '${verb}' (commands: ${Object.keys(VERBS).join(', ')}; see 'blocklayer --help')`);
    return 1;
  }
  if (asksHelp(rest)) {
    console.log(entry.help);
    return 0;
  }
  try {
    return await entry.run(rest);
  } catch (e) {
    // Stopped by a signal after cleaning up: say what was removed, exit as the shell expects (130, 143).
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
