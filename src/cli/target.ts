import { builtinDrivers } from '../drivers/builtin.js';
import { BlockError } from '../errors.js';

// The commands' name for imageOptions: a target's node tree, its format probed as it opens (driver 'auto').
export { imageOptions as targetOptions } from '../image-options.js';

/** `-U/--force-share` (qemu-img's): read-only, sharing everything, so an image another process holds read-write can be read. */
export const forceShareOption = { 'force-share': { type: 'boolean', short: 'U' } } as const;

// QEMU's force-share on every file node of a tree: the tools' helper, used by the verbs too.
export { withForceShare } from '../tools/open-input.js';

/** Image formats `-f/--format` accepts (qemu-img's `-f`: the format is used as given, no probing): every built-in format driver. */
export const FORMATS: readonly string[] = builtinDrivers()
  .filter((d) => d.capabilities.kind === 'format')
  .map((d) => d.name);

/** The `-f/--format` option as parseArgs declares it, the same for every command. */
export const formatOption = { format: { type: 'string', short: 'f' } } as const;

/** Checks a `-f/--format` value: undefined (probe) or one of {@link FORMATS}. */
export function checkFormat(format: string | undefined): string | undefined {
  if (format === undefined) return undefined;
  if (FORMATS.includes(format)) return format;
  throw new BlockError('EINVAL', `-f/--format: unknown image format '${format}' (known: ${FORMATS.join(', ')})`, { field: 'format' });
}

/** Bytes with binary units, as qemu-img prints them ("2 MiB (2097152 bytes)"). */
export function humanSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  const num = u === 0 ? String(v) : Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 3 : v < 100 ? 2 : 1).replace(/\.?0+$/, '');
  return `${num} ${units[u]}`;
}

/** The first line of a command's help text ("usage: blocklayer VERB …"), the message of a wrong argument count. */
export function usageLine(help: string): string {
  return help.slice(0, help.indexOf('\n'));
}

/** `--output=human|json` (qemu-img's spelling) and `--json`, its alias. */
export const outputOptions = { output: { type: 'string' }, json: { type: 'boolean' } } as const;

/** The output format asked by `--output` or `--json`; EINVAL naming --output for another value. */
export function checkOutput(values: { output?: string; json?: boolean }, fallback: 'human' | 'json'): 'human' | 'json' {
  const { output, json } = values;
  if (output !== undefined && output !== 'human' && output !== 'json') {
    throw new BlockError('EINVAL', `--output: '${output}' is not human or json`, { field: 'output' });
  }
  if (json && output === 'human') throw new BlockError('EINVAL', '--json and --output=human: give one of them', { field: 'output' });
  return json ? 'json' : (output ?? fallback);
}
