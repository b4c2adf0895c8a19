/**
 * The bytes of a qcow2 image file as the checker and the refcount repair use them: a
 * `BlockNode` of the file driver fits, and so does any object with these members.
 */
export interface Qcow2File {
  /** Current size in bytes. */
  readonly length: number;
  read(offset: number, buffer: Uint8Array): Promise<void>;
  write(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
  /**
   * Sets the size. A repair that places new refcount structures past the end calls it first
   * when present; without it, `write` itself must accept offsets past the end.
   */
  truncate?(size: number): Promise<void>;
}

/** Reads `length` bytes at `offset`; what lies past the end of the file reads as zeros (as QEMU's block layer does). */
export async function readClamped(file: Qcow2File, offset: number, length: number): Promise<Buffer> {
  const out = Buffer.alloc(length);
  const n = Math.max(0, Math.min(length, file.length - offset));
  if (n > 0) await file.read(offset, out.subarray(0, n));
  return out;
}

/** Writes `data` at `offset`, growing the file first when it ends before and can be truncated. */
export async function writeGrowing(file: Qcow2File, offset: number, data: Uint8Array): Promise<void> {
  const end = offset + data.length;
  if (end > file.length && file.truncate) await file.truncate(end);
  await file.write(offset, data);
}
