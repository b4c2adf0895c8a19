/**
 * Serves the browser example: `npx tsx examples/browser/serve.ts [IMAGE.qcow2] [--port N]`, then
 * open http://127.0.0.1:8086/ in a browser. The page boots v86 (SeaBIOS from Debian's `seabios`)
 * from IMAGE over HTTP through blocklayer's browser build; without IMAGE it boots the test boot
 * sector (assembled with nasm) from a qcow2 made here with blocklayer itself. persistent.html boots the
 * boot-count guest (tests/fixtures/guest/boot-count.asm) with its writes kept in OPFS across reloads.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildBrowser } from '../../scripts/build-browser.js';
import { BlockLayer, createImage } from '../../src/index.js';
import { assembleBootSector, BOOT_COUNT_ASM, buildDisk, SEABIOS_DIR } from '../../tests/helpers/v86-boot.js';
import { serveStatic } from './static-server.js';

const V86_BUILD = path.join(import.meta.dirname, '../../node_modules/v86/build');

/** The test boot sector (or the one assembled from `asm`) as a qcow2 image `dir/name` (written through blocklayer's qcow2 driver). */
export async function makeBootImage(dir: string, asm?: string, name = 'boot.qcow2'): Promise<string> {
  const disk = buildDisk(await assembleBootSector(dir, asm));
  const file = path.join(dir, name);
  await createImage(file, { format: 'qcow2', size: disk.length });
  const layer = new BlockLayer();
  const d = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: file } });
  await d.write(0, disk);
  await layer.close();
  return file;
}

/** Builds the bundle and serves the page, v86, SeaBIOS and the image; returns the server. */
export async function startExample(options: { image?: string; port?: number } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-browser-example-'));
  await buildBrowser(path.join(dir, 'dist'));
  const image = options.image ?? (await makeBootImage(dir));
  const images = path.join(dir, 'images');
  fs.mkdirSync(images);
  fs.symlinkSync(path.resolve(image), path.join(images, 'boot.qcow2'));
  // persistent.html's guest: it counts its boots on its disk
  await makeBootImage(images, BOOT_COUNT_ASM, 'boot-count.qcow2');
  const server = await serveStatic(
    { '/dist/': path.join(dir, 'dist'), '/v86/': V86_BUILD, '/bios/': SEABIOS_DIR, '/images/': images, '/': import.meta.dirname },
    options.port ?? 0,
  );
  return {
    ...server,
    close: async () => {
      await server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { port: { type: 'string', default: '8086' } } });
  const s = await startExample({ image: positionals[0], port: Number(values.port) });
  console.log(`open ${s.url}/index.html (Ctrl-C stops)`);
  console.log(`or ${s.url}/persistent.html: the disk's writes kept in the browser (OPFS) across reloads`);
}
