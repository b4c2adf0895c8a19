import type { BlockNode } from '../../node/node.js';
import type { GrainRun } from './grain-directory.js';
import { readClamped } from './sparse-extent.js';

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

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.file.writeZeroes(this.fileOffset + offset, length);
  }

  info(filename: string | undefined, type: string): Record<string, unknown> {
    return { filename, format: type, virtualSize: this.length };
  }
}
