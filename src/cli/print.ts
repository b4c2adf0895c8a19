import { writeSync } from 'node:fs';

/**
 * Prints `text` and a newline on standard output, written to descriptor 1 directly. The first
 * touch of `process.stdout` (console.log) builds a stream object and loads Node's stream modules,
 * a sizeable part of a short verb's start-up (`blocklayer info`); a verb that prints once at its
 * end needs none of it. Where the descriptor cannot take the text now (a non-blocking pipe
 * answering EAGAIN), the rest goes through process.stdout, which waits; a reader that went away
 * (EPIPE, `| head -1`) ends the printing quietly, as console.log does. Once the stream took
 * over, every later line goes through it too, so none can overtake what it still holds.
 */
let viaStream = false;

export function printLine(text: string): void {
  const bytes = Buffer.from(`${text}\n`);
  if (viaStream) {
    process.stdout.write(bytes);
    return;
  }
  let done = 0;
  try {
    while (done < bytes.length) done += writeSync(1, bytes, done, bytes.length - done);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EPIPE') return;
    if (code !== 'EAGAIN') throw e;
    viaStream = true;
    process.stdout.write(bytes.subarray(done));
  }
}
