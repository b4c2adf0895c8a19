// Replies at depth: many READs in flight whose replies leave in batches (one write callback per
// batch, frames back to the pool once written). fio's nbd engine (libnbd, software nobody here
// wrote) writes random blocks at QD32 with crc32c checksums and reads every one back at QD32;
// qemu-img then compares the file with the export read over NBD.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { NbdServer } from '../../src/nbd/server.js';
import { haveProgram, run } from '../helpers/tools.js';

const HAVE = haveProgram('fio') && haveProgram('qemu-img');
const SIZE = 16 << 20;

let dir: string;
let layer: BlockLayer;
let server: NbdServer;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'nbd-depth-'));
  layer = new BlockLayer();
});

afterEach(async () => {
  await server?.close();
  await layer.close();
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!HAVE)('NBD server at depth (batched replies)', () => {
  it('fio randwrite + crc32c verify at QD32: every block reads back as written, every budget byte comes back, frames are reused', async () => {
    const file = join(dir, 'disk.raw');
    writeFileSync(file, randomBytes(SIZE));
    const drive = await layer.openDrive({ driver: 'raw', file: { driver: 'file', filename: file, aio: 'threads' } });
    server = new NbdServer({ exports: [{ name: 'disk', drive }] });
    const { port } = (await server.listen({ host: '127.0.0.1', port: 0 })) as { port: number };
    const uri = `nbd://127.0.0.1:${port}/disk`;
    const common = ['--name=depth', '--ioengine=nbd', `--uri=${uri}`, '--bs=4k', `--size=${SIZE}`, '--iodepth=32', '--verify=crc32c', '--randseed=11', '--verify_state_save=0'];
    // Writes, then reads every block back at depth and checks it.
    const w = await run('fio', [...common, '--rw=randwrite', '--do_verify=1'], 120_000);
    expect(w.code, w.stderr).toBe(0);
    // A second pass that only reads and verifies (the replies of 32 READs in flight at a time).
    const v = await run('fio', [...common, '--rw=randread', '--verify_only'], 120_000);
    expect(v.code, v.stderr).toBe(0);
    expect(server.budget.used).toBe(0);
    expect(server.pool.idleBytes).toBeGreaterThan(0);
    // qemu-img reads the whole export over NBD and the file beside it (sharing the lock): identical.
    await drive.flush();
    const cmp = await run('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'raw', file, uri], 120_000);
    expect(cmp.code, cmp.stderr + cmp.stdout).toBe(0);
    expect(cmp.stdout).toContain('Images are identical');
    expect(server.budget.used).toBe(0);
  }, 240_000);
});
