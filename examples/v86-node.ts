/**
 * Boots a disk image in v86 (SeaBIOS) from a throttled blocklayer drive and prints the guest's serial output.
 *
 *   npx tsx examples/v86-node.ts [image.raw|image.qcow2] [--iops N] [--seconds S]
 *
 * Without an image it assembles the test boot sector (tests/fixtures/v86/boot.asm, needs nasm) into a
 * temporary raw disk, which prints BOOT, a checksum, WRITE OK and DONE. Needs SeaBIOS in /usr/share/seabios
 * (apt-get install seabios). qcow2 images open read-only here: guest writes are refused (io-error events).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { V86 } from 'v86';
import { toV86Disk } from 'blocklayer/v86';
import { BlockLayer, openImage } from 'blocklayer';
import { assembleBootSector, BIOS, buildDisk, V86_WASM, VGA_BIOS } from '../tests/helpers/v86-boot.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { iops: { type: 'string', default: '50' }, seconds: { type: 'string', default: '60' } },
});
const iops = Number(values.iops);
const seconds = Number(values.seconds);

let image = positionals[0];
let tmp: string | undefined;
if (image === undefined) {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-v86-example-'));
  image = path.join(tmp, 'boot.raw');
  fs.writeFileSync(image, buildDisk(await assembleBootSector(tmp)));
  console.error(`no image given: booting the test boot sector from ${image}`);
}

const layer = new BlockLayer();
const drive = await openImage(image, { throttle: { iopsTotal: iops } }, layer);
const disk = toV86Disk(drive);
disk.on('io-error', (e) => console.error(`\n[io-error] ${e.operation} at ${e.offset} (+${e.length}): ${e.error.message}`));

const file = (p: string) => {
  const b = fs.readFileSync(p);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
};
const started = performance.now();
const emulator = new V86({
  wasm_path: V86_WASM,
  bios: { buffer: file(BIOS) },
  vga_bios: { buffer: file(VGA_BIOS) },
  hda: disk,
  memory_size: 64 * 1024 * 1024,
  autostart: true,
  disable_speaker: true,
});

let serial = '';
let stopping = false;
const stop = async (why: string) => {
  if (stopping) return;
  stopping = true;
  clearTimeout(timer);
  await emulator.destroy();
  await disk.flush().catch(() => {}); // a refused write was already reported as an io-error
  const s = drive.stats();
  console.error(
    `\n[${why} after ${((performance.now() - started) / 1000).toFixed(1)} s] ${s.rdOperations} reads (${s.rdBytes} B), ${s.wrOperations} writes, ` +
      `${s.throttle?.delayedRequests ?? 0} requests held by iops=${iops} for ${((s.throttle?.totalDelayNs ?? 0) / 1e6).toFixed(0)} ms in all`,
  );
  await layer.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
};
const timer = setTimeout(() => void stop('stopped'), seconds * 1000);
emulator.add_listener('serial0-output-byte', (byte: number) => {
  const ch = String.fromCharCode(byte);
  process.stdout.write(ch);
  serial += ch;
  // The test boot sector halts after DONE.
  if (tmp && serial.includes('DONE')) void stop('guest done');
});
