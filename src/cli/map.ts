import { parseArgs } from 'node:util';
import type { BlockNode } from '../node/node.js';
import { BlockError } from '../errors.js';
import { BlockLayer } from '../layer.js';
import { checkFormat, checkOutput, forceShareOption, formatOption, outputOptions, targetOptions, usageLine, withForceShare } from './target.js';

export const MAP_HELP = `usage: blocklayer map [-f FMT] [-U] [--output=json|human] [--snapshot S] IMAGE
The allocation map of an image's guest view, like qemu-img map --output=json.
Which ranges hold data, read as zeros, and come from which layer of the backing chain.

  -f, --format FMT     image format (raw, qcow2); given, it is used without probing
  -U, --force-share    read-only, sharing everything: read an image another process holds read-write
  --output FMT         json (the default) or human: qemu-img map's table of the ranges
                       holding data (offset, length, where in which file)
  --json               the same as --output=json
  --snapshot S         map snapshot S (id or name) of a qcow2 image
  -h, --help           this help`;

/** The file holding the data of the image `depth` layers down the chain (its data file, or its own file), as qemu-img map names it. */
function fileAtDepth(top: BlockNode, depth: number): string {
  let node: BlockNode | undefined = top;
  for (let i = 0; i < depth && node; i++) node = node.child('backing');
  const holder = node?.child('data-file') ?? node?.child('file') ?? node;
  if (holder === undefined) return '';
  if (holder.driver.name === 'http') return holder.info().url as string;
  return (holder.options.filename as string | undefined) ?? '';
}

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
  const layer = new BlockLayer();
  const drive = await layer.openDrive(withForceShare(await targetOptions(positionals[0], { format, snapshot: values.snapshot }), values['force-share']));
  try {
    const map = await drive.blockStatusMap();
    if (output === 'human') {
      // as qemu-img: the ranges that hold data (not read as zeros) at a known place in a file
      const lines = [`${'Offset'.padEnd(16)}${'Length'.padEnd(16)}${'Mapped to'.padEnd(16)}File`];
      for (const e of map) {
        if (e.data && e.hostOffset === undefined) throw new BlockError('ENOTSUP', 'File contains external, encrypted or compressed clusters.', { offset: e.offset });
        if (e.data && !e.zero) lines.push(`${hex16(e.offset)}${hex16(e.length)}${hex16(e.hostOffset ?? 0)}${fileAtDepth(drive.node, e.depth)}`);
      }
      console.log(lines.join('\n'));
      return 0;
    }
    const lines = map.map((e) => {
      const o: Record<string, unknown> = { start: e.offset, length: e.length, depth: e.depth, present: e.allocated, zero: e.zero, data: e.data };
      if (e.hostOffset !== undefined) o.offset = e.hostOffset;
      return JSON.stringify(o).replace(/,"/g, ', "').replace(/":/g, '": ').replace('{"', '{ "');
    });
    console.log(`[${lines.join(',\n')}]`);
  } finally {
    await layer.close();
  }
  return 0;
}
