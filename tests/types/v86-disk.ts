// Type test, compiled by `npx tsc -p tsconfig.json --noEmit` (never run): a V86Disk goes into v86's
// own option types as a disk without a cast (v86's typings know images as `{ url }` or `{ buffer }`;
// V86Disk's `url` getter makes it one), and still is not any object v86 would take.
import type { V86Image, V86Options } from 'v86';
import type { Drive } from '../../src/drive.js';
import { toV86Disk, type V86Disk } from '../../src/adapters/v86.js';

export function v86Options(drive: Drive, cd: V86Disk, floppy: V86Disk): V86Options {
  const hda = toV86Disk(drive, { maxBufferBytes: 1 << 20 });
  const image: V86Image = hda;
  return { wasm_path: 'v86.wasm', bios: { url: 'bios.bin' }, hda, hdb: image, cdrom: cd, fda: floppy, autostart: false };
}

export function notAnImage(drive: Drive): V86Options {
  // @ts-expect-error a drive is not a v86 disk: wrap it with toV86Disk
  return { hda: drive };
}
