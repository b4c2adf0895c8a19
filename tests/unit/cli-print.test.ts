// printLine writes to descriptor 1 directly; once a full pipe (EAGAIN) handed the rest to
// process.stdout, every later line must follow through the stream, never overtake it.
import { afterEach, describe, expect, it, vi } from 'vitest';

const writes: string[] = [];
let full = false;
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  return {
    ...fs,
    writeSync: (fd: number, bytes: Uint8Array, offset = 0, length = bytes.length - offset) => {
      if (fd !== 1) return fs.writeSync(fd, bytes, offset, length);
      if (full) throw Object.assign(new Error('EAGAIN: resource temporarily unavailable, write'), { code: 'EAGAIN' });
      writes.push(`fd:${Buffer.from(bytes.subarray(offset, offset + length)).toString()}`);
      return length;
    },
  };
});

afterEach(() => vi.restoreAllMocks());

describe('printLine', () => {
  it('writes to fd 1 until the pipe is full; from then on every line goes through process.stdout, in order', async () => {
    const stream = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      writes.push(`stream:${Buffer.from(chunk).toString()}`);
      return true;
    });
    const { printLine } = await import('../../src/cli/print.js');
    printLine('one');
    full = true;
    printLine('two');
    full = false; // the descriptor would take bytes again, but the stream still holds 'two'
    printLine('three');
    expect(writes).toEqual(['fd:one\n', 'stream:two\n', 'stream:three\n']);
    expect(stream).toHaveBeenCalledTimes(2);
  });
});
