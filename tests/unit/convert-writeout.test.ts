import { describe, expect, it } from 'vitest';
import { WriteOut } from '../../src/tools/convert-writeout.js';
import type { WritebackHint } from '../../src/platform/writeback.js';

/** A hint whose starts are counted and resolved by the test. */
function fakeHint() {
  const waiting: (() => void)[] = [];
  const hint: WritebackHint & { starts: number; closed: boolean } = {
    starts: 0,
    closed: false,
    start: () => {
      hint.starts++;
      return new Promise<void>((r) => waiting.push(r));
    },
    close: async () => {
      hint.closed = true;
    },
  };
  const settle = async () => {
    for (const r of waiting.splice(0)) r();
    await new Promise((r) => setImmediate(r));
  };
  return { hint, settle };
}

describe('WriteOut (convert → raw: write-out hints as the copy goes)', () => {
  it('starts a hint each time the writes pass the next mark, the mark then `every` past the write', async () => {
    const { hint, settle } = fakeHint();
    const w = new WriteOut(hint, 100);
    w.wrote(40);
    w.wrote(99);
    expect(hint.starts).toBe(0);
    w.wrote(120);
    expect(hint.starts).toBe(1);
    await settle();
    w.wrote(200);
    expect(hint.starts).toBe(1);
    w.wrote(220);
    expect(hint.starts).toBe(2);
    await settle();
    await w.close();
    expect(hint.closed).toBe(true);
  });

  it('asks no new hint while one is starting, and close waits for it before closing the descriptor', async () => {
    const { hint, settle } = fakeHint();
    const w = new WriteOut(hint, 10);
    w.wrote(10);
    w.wrote(50);
    w.wrote(90);
    expect(hint.starts).toBe(1);
    let closed = false;
    const closing = w.close().then(() => {
      closed = true;
    });
    await new Promise((r) => setImmediate(r));
    expect(closed).toBe(false);
    expect(hint.closed).toBe(false);
    await settle();
    await closing;
    expect(hint.closed).toBe(true);
  });
});
