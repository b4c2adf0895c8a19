import { parseArgs } from 'node:util';
import { BlockError } from '../errors.js';
import { mapImageDetail } from '../tools/map.js';
import { MAP_HELP } from './help.js';
import { checkFormat, checkOutput, forceShareOption, formatOption, outputOptions, usageLine } from './target.js';

/** An offset as C's printf("%#-16"PRIx64): 0, or 0x and hex digits, left-aligned in 16 columns. */
const hex16 = (n: number) => (n === 0 ? '0' : `0x${n.toString(16)}`).padEnd(16);

/**
 * `blocklayer map [-f FMT] [--output=json|human] IMAGE [--snapshot S]`: the allocation map in
 * `qemu-img map --output=json` form (the default here, as scripts want it), or qemu-img map's
 * human table with --output=human.
 */
export async function mapCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...outputOptions, ...forceShareOption, snapshot: { type: 'string' }, ...formatOption } });
  if (positionals.length !== 1) throw new Error(usageLine(MAP_HELP));
  const output = checkOutput(values, 'json');
  const format = checkFormat(values.format);
  const { entries, files } = await mapImageDetail(positionals[0], { format, snapshot: values.snapshot, forceShare: values['force-share'] });
  if (output === 'human') {
    // as qemu-img: the ranges that hold data (not read as zeros) at a known place in a file
    const lines = [`${'Offset'.padEnd(16)}${'Length'.padEnd(16)}${'Mapped to'.padEnd(16)}File`];
    for (const e of entries) {
      if (e.data && e.offset === undefined) throw new BlockError('ENOTSUP', 'File contains external, encrypted or compressed clusters.', { offset: e.start });
      if (e.data && !e.zero) lines.push(`${hex16(e.start)}${hex16(e.length)}${hex16(e.offset ?? 0)}${files[e.depth]}`);
    }
    console.log(lines.join('\n'));
    return 0;
  }
  // one range a line, spaced as qemu-img prints them
  const lines = entries.map((e) => JSON.stringify(e).replace(/,"/g, ', "').replace(/":/g, '": ').replace('{"', '{ "'));
  console.log(`[${lines.join(',\n')}]`);
  return 0;
}
