import fs from 'node:fs';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { BlockLayer } from '../layer.js';
import { targetOptions } from './target.js';

const CHUNK = 4 * 1024 * 1024;

/**
 * `blocklayer convert IMAGE OUT.raw [--snapshot S] [--progress]`: writes the guest view as a
 * raw file, leaving holes where the image reads as zeros (block status), like qemu-img convert.
 */
export async function convertCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { snapshot: { type: 'string' }, format: { type: 'string', short: 'f' }, progress: { type: 'boolean', short: 'p' }, quiet: { type: 'boolean', short: 'q' } },
  });
  if (positionals.length !== 2) throw new Error('usage: blocklayer convert IMAGE OUT.raw [--snapshot S] [--format F] [-p]');
  const [input, output] = positionals;
  const layer = new BlockLayer();
  const drive = await layer.openDrive(await targetOptions(input, values));
  const showBar = !values.quiet && (values.progress ?? process.stderr.isTTY);
  const bar = showBar ? new cliProgress.SingleBar({ format: 'converting [{bar}] {percentage}% | {value}/{total} MiB', stream: process.stderr }, cliProgress.Presets.shades_classic) : null;
  const fd = fs.openSync(output, 'w');
  try {
    fs.ftruncateSync(fd, drive.length);
    bar?.start(Math.ceil(drive.length / 2 ** 20), 0);
    const buf = Buffer.allocUnsafe(CHUNK);
    let pos = 0;
    while (pos < drive.length) {
      const s = await drive.blockStatus(pos, Math.min(CHUNK, drive.length - pos));
      if (!s.zero) {
        const part = buf.subarray(0, s.length);
        await drive.read(pos, part);
        fs.writeSync(fd, part, 0, part.length, pos);
      }
      pos += s.length;
      bar?.update(Math.floor(pos / 2 ** 20));
    }
    bar?.update(Math.ceil(drive.length / 2 ** 20));
  } finally {
    bar?.stop();
    fs.closeSync(fd);
    await layer.close();
  }
  return 0;
}
