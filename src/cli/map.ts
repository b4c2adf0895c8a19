import { parseArgs } from 'node:util';
import { BlockLayer } from '../layer.js';
import { checkFormat, formatOption, targetOptions } from './target.js';

/** `blocklayer map [-f FMT] IMAGE [--snapshot S]`: the allocation map in `qemu-img map --output=json` form. */
export async function mapCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { snapshot: { type: 'string' }, ...formatOption } });
  if (positionals.length !== 1) throw new Error('usage: blocklayer map [-f FMT] IMAGE [--snapshot S]');
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
