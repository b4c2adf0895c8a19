import { parseArgs } from 'node:util';
import { BlockLayer } from '../layer.js';
import { checkFormat, formatOption, targetOptions, usageLine } from './target.js';

export const MAP_HELP = `usage: blocklayer map [-f FMT] [--snapshot S] IMAGE
The allocation map of an image's guest view, like qemu-img map --output=json.
Which ranges hold data, read as zeros, and come from which layer of the backing chain.

  -f, --format FMT     image format (raw, qcow2); given, it is used without probing
  --snapshot S         map snapshot S (id or name) of a qcow2 image
  -h, --help           this help`;

/** `blocklayer map [-f FMT] IMAGE [--snapshot S]`: the allocation map in `qemu-img map --output=json` form. */
export async function mapCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { snapshot: { type: 'string' }, ...formatOption } });
  if (positionals.length !== 1) throw new Error(usageLine(MAP_HELP));
  const format = checkFormat(values.format);
  const layer = new BlockLayer();
  const drive = await layer.openDrive(await targetOptions(positionals[0], { format, snapshot: values.snapshot }));
  try {
    const lines = (await drive.blockStatusMap()).map((e) => {
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
