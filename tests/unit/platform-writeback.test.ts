// openWritebackHint (src/platform/writeback.ts): a write-out hint for a regular file, none for
// what is not one; starting it leaves the file's bytes as they were written.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openWritebackHint } from '../../src/platform/writeback.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-hint-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Whether koffi loads here (an optional dependency): the hint exists only then, and only on Linux. */
function koffiLoads(): boolean {
  try {
    createRequire(import.meta.url)('koffi');
    return true;
  } catch {
    return false;
  }
}

describe('openWritebackHint', () => {
  it('gives a hint for a regular file on Linux with koffi; starting it keeps the data', async () => {
    const f = path.join(dir, 'data');
    const data = Buffer.alloc(256 * 1024, 0x5c);
    fs.writeFileSync(f, data);
    const hint = await openWritebackHint(f);
    if (process.platform !== 'linux' || !koffiLoads()) {
      expect(hint).toBeNull();
      return;
    }
    expect(hint).not.toBeNull();
    await hint!.start();
    await hint!.start();
    await hint!.close();
    expect(fs.readFileSync(f).equals(data)).toBe(true);
  });

  it('gives none for a directory or a missing file', async () => {
    expect(await openWritebackHint(dir)).toBeNull();
    expect(await openWritebackHint(path.join(dir, 'missing'))).toBeNull();
  });
});
