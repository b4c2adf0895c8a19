import { BlockError } from '../errors.js';
import type { Verb } from './image-verbs.js';
import { printLine } from './print.js';

/** A verb's help text, loading serve's module for its own. */
export async function helpOf(entry: Verb): Promise<string> {
  return typeof entry.help === 'string' ? entry.help : entry.help();
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

/** Runs one verb with its arguments (or prints its help) and returns the exit code; its failure is one line on stderr. */
export async function runVerb(verb: string, entry: Verb, args: string[]): Promise<number> {
  if (asksHelp(args)) {
    printLine(await helpOf(entry));
    return 0;
  }
  try {
    const run = await entry.load();
    return await run(args);
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
