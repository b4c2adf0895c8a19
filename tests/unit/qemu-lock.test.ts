import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fdinfoLocksByte } from '../../src/drivers/file/lock-holders.js';
import { haveQemuLocks, imagePermissions, lockImage, Perm, REPLACE_PERMISSIONS } from '../../src/drivers/file/qemu-lock.js';

describe('QEMU lock permissions', () => {
  it('a reader takes consistent read and shares reading and unchanging writes only', () => {
    expect(imagePermissions(false, true)).toEqual({ perm: Perm.consistentRead, shared: Perm.consistentRead | Perm.writeUnchanged });
  });

  it('a writer takes write; resize only under a format that grows its file (what qemu-nbd takes for qcow2 and for raw)', () => {
    expect(imagePermissions(true, true).perm).toBe(Perm.consistentRead | Perm.write | Perm.resize);
    expect(imagePermissions(true, false).perm).toBe(Perm.consistentRead | Perm.write);
    expect(imagePermissions(true, false).shared & Perm.write).toBe(0);
  });

  it('replacing a file shares nothing', () => {
    expect(REPLACE_PERMISSIONS).toEqual({ perm: Perm.write | Perm.resize, shared: 0 });
  });
});

describe('fdinfo lock lines', () => {
  const info = 'pos:\t0\nflags:\t02100002\nlock:\t1: OFDLCK ADVISORY  READ -1 fe:00:2146602 100 101\nlock:\t2: OFDLCK ADVISORY  READ -1 fe:00:2146602 203 203\n';
  it('a range covers its first and last byte and nothing outside', () => {
    expect([99, 100, 101, 102, 201, 203, 204].map((b) => fdinfoLocksByte(info, b))).toEqual([false, true, true, false, false, true, false]);
  });
  it('EOF ranges reach to the end', () => {
    expect(fdinfoLocksByte('lock:\t1: FLOCK  ADVISORY  WRITE 77 08:01:5 0 EOF\n', 1e12)).toBe(true);
  });
});

describe.skipIf(!haveQemuLocks())('locks between two opens of one file in this process', () => {
  it('readers coexist; a writer after a reader is refused with QEMU words naming this process; closing the reader lets it in', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-qlock-'));
    const file = path.join(dir, 'img');
    fs.writeFileSync(file, Buffer.alloc(4096));
    const r1 = fs.openSync(file, 'r');
    const r2 = fs.openSync(file, 'r');
    const w = fs.openSync(file, 'r+');
    try {
      await lockImage(r1, file, imagePermissions(false, true), 'on');
      await lockImage(r2, file, imagePermissions(false, true), 'on');
      await expect(lockImage(w, file, imagePermissions(true, true), 'on')).rejects.toMatchObject({
        code: 'ELOCKED',
        message: `failed to get "write" lock on '${file}': is another process using the image? (held by this process)`,
      });
      fs.closeSync(r1);
      fs.closeSync(r2);
      await lockImage(w, file, imagePermissions(true, true), 'on');
      const r3 = fs.openSync(file, 'r');
      await expect(lockImage(r3, file, imagePermissions(false, true), 'on')).rejects.toMatchObject({ message: expect.stringContaining('shared "write" lock') });
      fs.closeSync(r3);
    } finally {
      fs.closeSync(w);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
