import type { BlockNode } from '../../node/node.js';
import type { GrainRun } from './grain-directory.js';
import { readClamped } from './sparse-extent.js';

const ONE_ZERO_BYTE = new Uint8Array(1);

/** A flat extent: the guest's bytes as they are, from `fileOffset` of its file (FLAT, VMFS). */
export class FlatExtent {
  constructor(
    readonly file: BlockNode,
    /** Guest offset of the extent's first byte. */
    readonly start: number,
    readonly length: number,
    /** Where the extent's data starts in its file (the descriptor's offset, in bytes). */
    readonly fileOffset: number,
  ) {}

  async run(offset: number, length: number): Promise<GrainRun> {
    return { kind: 'data', host: this.fileOffset + offset, length: Math.min(length, this.length - offset) };
  }

  /** A flat file shorter than its extent reads zeros past its end. */
  read(offset: number, buffer: Uint8Array): Promise<void> {
    return readClamped(this.file, this.fileOffset + offset, buffer);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.file.write(this.fileOffset + offset, data, true);
  }

  /** Past the end of a short file, the file grows (its new bytes read as zeros), as QEMU's write-zeroes to a file does. */
  async writeZeroes(offset: number, length: number): Promise<void> {
    const at = this.fileOffset + offset;
    const size = this.file.length;
    if (at + length > size) await this.file.write(at + length - 1, ONE_ZERO_BYTE, true);
    if (at < size) await this.file.writeZeroes(at, Math.min(length, size - at));
  }

  info(filename: string | undefined, type: string): Record<string, unknown> {
    return { filename, format: type, virtualSize: this.length };
  }
}
