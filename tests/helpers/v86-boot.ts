/**
 * Booting tests/fixtures/v86/boot.asm in v86 under SeaBIOS: shared by the v86 boot test, the
 * example and the bench. The boot sector reads DATA_SECTORS sectors from LBA 1, prints their byte
 * sum, writes one sector of a known pattern at WRITE_LBA, prints DONE and halts.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { V86, type V86Options } from 'v86';
import { ok } from './tools.js';

export const BOOT_ASM = fileURLToPath(new URL('../fixtures/v86/boot.asm', import.meta.url));
/** The guest that counts its boots in a marker sector of its disk (the persistent browser example). */
export const BOOT_COUNT_ASM = fileURLToPath(new URL('../fixtures/guest/boot-count.asm', import.meta.url));
/** Where the guests' shared nasm includes (serial.inc) live; ends with a slash, as nasm's -i wants. */
export const GUEST_INCLUDES = fileURLToPath(new URL('../fixtures/guest/', import.meta.url));
export const SEABIOS_DIR = '/usr/share/seabios';
export const BIOS = path.join(SEABIOS_DIR, 'bios.bin');
export const VGA_BIOS = path.join(SEABIOS_DIR, 'vgabios-stdvga.bin');
/** Where v86's wasm lives (v86 looks for build/v86.wasm relative to the working directory otherwise). */
export const V86_WASM = path.join(path.dirname(createRequire(import.meta.url).resolve('v86')), 'v86.wasm');

/** Must match boot.asm. */
export const DATA_SECTORS = 32;
export const WRITE_LBA = 33;
export const DISK_SIZE = 1024 * 1024;
/** Where boot-count.asm keeps its marker (must match it). */
export const MARK_LBA = 64;

/** Byte of the data area at disk offset `o`. */
export const dataByte = (o: number) => (o * 31 + 7) & 0xff;
/** The sector the guest writes: byte i = (i * 3 + 0x11) & 0xff. */
export const guestSector = () => Uint8Array.from({ length: 512 }, (_, i) => (i * 3 + 0x11) & 0xff);

/** The "SUM xxxx" line the guest prints when it read the data area right. */
export function expectedSumLine(): string {
  let sum = 0;
  for (let o = 512; o < 512 * (1 + DATA_SECTORS); o++) sum = (sum + dataByte(o)) & 0xffff;
  return `SUM ${sum.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** Assembles boot.asm (or another boot sector's source, `asm`) with nasm into `dir`; returns the 512-byte boot sector. */
export async function assembleBootSector(dir: string, asm = BOOT_ASM): Promise<Uint8Array> {
  const out = path.join(dir, `${path.basename(asm, '.asm')}.bin`);
  await ok('nasm', ['-f', 'bin', '-i', GUEST_INCLUDES, '-o', out, asm]);
  const sector = new Uint8Array(fs.readFileSync(out));
  if (sector.length !== 512) throw new Error(`${path.basename(asm)} assembled to ${sector.length} bytes, expected 512`);
  return sector;
}

/** A raw disk image: the boot sector, then the data pattern everywhere else. */
export function buildDisk(bootSector: Uint8Array): Uint8Array {
  const disk = new Uint8Array(DISK_SIZE);
  for (let o = 512; o < DISK_SIZE; o++) disk[o] = dataByte(o);
  disk.set(bootSector, 0);
  return disk;
}

export interface BootResult {
  /** Everything the guest printed on COM1. */
  serial: string;
  /** Wall time from creating the emulator to "DONE". */
  ms: number;
  /** Guest instructions executed until "DONE" (emulated time, roughly). */
  instructions: number;
  /** The emulator, still running, when asked to keep it. */
  emulator?: V86;
}

/** Boots v86 with `hda` and resolves once the guest printed `until` on COM1 (rejects after `timeoutMs`). */
/** The emulator options every boot here shares (SeaBIOS, v86's wasm, no speaker, keyboard or mouse). */
export function baseOptions(): V86Options {
  const toArrayBuffer = (file: string) => {
    const b = fs.readFileSync(file);
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
  };
  return {
    wasm_path: V86_WASM,
    bios: { buffer: toArrayBuffer(BIOS) },
    vga_bios: { buffer: toArrayBuffer(VGA_BIOS) },
    memory_size: 32 * 1024 * 1024,
    disable_speaker: true,
    disable_keyboard: true,
    disable_mouse: true,
  };
}

/**
 * Boots v86 with `hda` and resolves once the guest printed `until` on COM1 (rejects after `timeoutMs`).
 * With `keep`, the emulator is left running and returned instead of destroyed.
 */
export function bootV86(
  hda: unknown,
  options: { until?: string; timeoutMs?: number; onSerial?: (text: string) => void; keep?: boolean } = {},
): Promise<BootResult> {
  const until = options.until ?? 'DONE';
  const timeoutMs = options.timeoutMs ?? 60_000;
  const start = performance.now();
  // v86's typings only list url/buffer images; it takes any object with get/set/load as-is.
  const emulator = new V86({ ...baseOptions(), hda: hda as V86Options['hda'], autostart: true });
  return new Promise((resolve, reject) => {
    let serial = '';
    const timer = setTimeout(() => {
      void emulator.destroy();
      reject(new Error(`v86: no "${until}" on COM1 within ${timeoutMs} ms; got ${JSON.stringify(serial)}`));
    }, timeoutMs);
    emulator.add_listener('serial0-output-byte', (byte: number) => {
      const ch = String.fromCharCode(byte);
      serial += ch;
      options.onSerial?.(ch);
      if (serial.includes(until)) {
        clearTimeout(timer);
        const ms = performance.now() - start;
        const instructions = emulator.get_instruction_counter();
        if (options.keep) {
          resolve({ serial, ms, instructions, emulator });
          return;
        }
        emulator.destroy().then(
          () => resolve({ serial, ms, instructions }),
          (e: unknown) => reject(e),
        );
      }
    });
  });
}
