import { describe, expect, it } from 'vitest';
import { DriveDisk, toFileDisk } from '../../src/adapters/file-disk.js';
import { BlockError, BlockLayer } from '../../src/index.js';

const layer = new BlockLayer();
const memory = (readOnly = false) => layer.openDrive({ driver: 'memory', size: '1M', readOnly });
const filled = (n: number, value: number) => Buffer.alloc(n, value);

describe('DriveDisk: file-disk Disk over a drive', () => {
  it('reports the drive length as capacity and maps reads and writes to the drive', async () => {
    const drive = await memory();
    const disk = new DriveDisk(drive);
    expect(await disk.getCapacity()).toBe(1 << 20);
    expect(await disk.write(filled(4096, 7), 0, 4096, 8192)).toMatchObject({ bytesWritten: 4096 });
    expect([...(await drive.read(8191, 3))]).toEqual([0, 7, 7]);
    await drive.write(100, new Uint8Array([1, 2, 3]));
    const { bytesRead, buffer } = await disk.read(Buffer.alloc(5), 0, 5, 99);
    expect(bytesRead).toBe(5);
    expect([...buffer]).toEqual([0, 1, 2, 3, 0]);
    expect(drive.stats()).toMatchObject({ wrOperations: 2, rdOperations: 2 });
    await drive.close();
  });

  it('honours bufferOffset on reads and writes', async () => {
    const drive = await memory();
    const disk = toFileDisk(drive);
    const src = Buffer.from([9, 9, 1, 2, 3, 9]);
    await disk.write(src, 2, 3, 500);
    const target = Buffer.alloc(6, 0xee);
    const r = await disk.read(target, 1, 4, 499);
    expect(r.bytesRead).toBe(4);
    expect([...target]).toEqual([0xee, 0, 1, 2, 3, 0xee]);
    await expect(disk.read(Buffer.alloc(4), 2, 4, 0)).rejects.toMatchObject({ code: 'EINVAL', field: 'bufferOffset' });
    await expect(disk.write(Buffer.alloc(4), 0, 5, 0)).rejects.toMatchObject({ code: 'EINVAL', field: 'bufferOffset' });
    await drive.close();
  });

  it('flush and discard reach the drive; discards are recorded but never read as zeros', async () => {
    const drive = await memory();
    const disk = new DriveDisk(drive);
    expect(disk.discardIsZero).toBe(false);
    await disk.write(filled(65536, 5), 0, 65536, 65536);
    await disk.flush();
    expect(drive.stats().flushOperations).toBe(1);
    await disk.discard(65536, 65536);
    expect(drive.stats()).toMatchObject({ unmapOperations: 1, unmapBytes: 65536 });
    expect(disk.getDiscardedChunks().map((c) => [c.start, c.end])).toEqual([[65536, 131071]]);
    // The memory driver drops discarded chunks: the read shows what the drive holds.
    expect((await disk.read(Buffer.alloc(4), 0, 4, 65536)).buffer.every((b) => b === 0)).toBe(true);
    // A write over a discarded range removes the record.
    await disk.write(filled(512, 6), 0, 512, 65536);
    expect(disk.getDiscardedChunks().map((c) => [c.start, c.end])).toEqual([[66048, 131071]]);
    await drive.close();
  });

  it('reads discarded ranges from the drive when the driver keeps the data (discard is a hint)', async () => {
    // Only the aligned part of a discard goes down: with 4 KiB alignment, 200 bytes keep their data.
    const drive = await layer.openDrive({ driver: 'blkdebug', align: 4096, file: { driver: 'memory', size: '1M' } });
    const disk = new DriveDisk(drive);
    await disk.write(filled(4096, 8), 0, 4096, 0);
    await disk.discard(100, 200);
    expect(disk.getDiscardedChunks()).toHaveLength(1);
    const { buffer } = await disk.read(Buffer.alloc(200), 0, 200, 100);
    expect(buffer.every((b) => b === 8)).toBe(true);
    await drive.close();
  });

  it('follows the drive: a read-only drive gives a read-only disk whose writes stay in memory', async () => {
    const drive = await memory(true);
    const disk = new DriveDisk(drive);
    expect(disk.readOnly).toBe(true);
    expect(disk.recordWrites).toBe(true);
    await disk.write(filled(512, 1), 0, 512, 4096);
    expect((await disk.read(Buffer.alloc(512), 0, 512, 4096)).buffer.every((b) => b === 1)).toBe(true);
    expect((await drive.read(4096, 512)).every((b) => b === 0)).toBe(true);
    expect(drive.stats()).toMatchObject({ wrOperations: 0, invalidWrOperations: 0 });
    await drive.close();
  });

  it('a read-only disk without recordWrites refuses writes with EROFS and leaves the drive alone', async () => {
    const drive = await memory(true);
    const disk = new DriveDisk(drive, { recordWrites: false });
    expect(disk.readOnly).toBe(true);
    const error = await disk.write(filled(512, 1), 0, 512, 0).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BlockError);
    expect(error).toMatchObject({ code: 'EROFS', offset: 0, length: 512 });
    expect(disk.lastError).toBe(error);
    expect(disk.knownChunks).toEqual([]);
    await disk.flush(); // nothing to flush: resolves without touching the drive
    await disk.discard(0, 4096); // recorded only
    expect(drive.stats()).toMatchObject({ wrOperations: 0, flushOperations: 0, unmapOperations: 0, invalidWrOperations: 0, invalidUnmapOperations: 0 });
    expect(() => new DriveDisk(drive, { readOnly: false })).toThrow(expect.objectContaining({ code: 'EROFS', field: 'readOnly' }));
    await drive.close();
  });

  it('a read-only disk with recordWrites keeps writes in memory and leaves the drive untouched', async () => {
    const drive = await memory();
    const disk = new DriveDisk(drive, { readOnly: true, recordWrites: true });
    await disk.write(filled(10, 4), 0, 10, 1000);
    expect([...(await disk.read(Buffer.alloc(12), 0, 12, 999)).buffer]).toEqual([0, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 0]);
    expect([...(await drive.read(1000, 2))]).toEqual([0, 0]);
    expect(drive.stats().wrOperations).toBe(0);
    // file-disk would drop a recorded write past the end and report success.
    await expect(disk.write(filled(10, 4), 0, 10, (1 << 20) - 5)).rejects.toMatchObject({ code: 'EINVAL', offset: (1 << 20) - 5 });
    await drive.close();
  });

  it('drive errors reject with the BlockError (blkdebug EIO on read, ENOSPC on write, EIO on flush and discard)', async () => {
    const drive = await layer.openDrive({
      driver: 'blkdebug',
      rules: [
        { event: 'read', code: 'EIO', offset: 4096 },
        { event: 'write', code: 'ENOSPC', offset: 8192 },
        { event: 'flush', code: 'EIO' },
        { event: 'discard', code: 'EIO' },
      ],
      file: { driver: 'memory', size: '1M' },
    });
    const disk = new DriveDisk(drive);
    expect(disk.lastError).toBe(null);
    const readError = await disk.read(Buffer.alloc(8192), 0, 8192, 0).catch((e: unknown) => e);
    expect(readError).toBeInstanceOf(BlockError);
    expect(readError).toMatchObject({ code: 'EIO', offset: 0 });
    expect(disk.lastError).toBe(readError);
    await expect(disk.write(filled(512, 1), 0, 512, 8192)).rejects.toMatchObject({ code: 'ENOSPC', offset: 8192 });
    await expect(disk.flush()).rejects.toMatchObject({ code: 'EIO' });
    await expect(disk.discard(0, 65536)).rejects.toMatchObject({ code: 'EIO' });
    expect(disk.lastError).toMatchObject({ code: 'EIO', offset: 0, length: 65536 });
    // A failed discard is not recorded.
    expect(disk.getDiscardedChunks()).toEqual([]);
    // Out of range and closed drives reject too.
    await expect(disk.read(Buffer.alloc(16), 0, 16, (1 << 20) - 8)).rejects.toMatchObject({ code: 'EINVAL' });
    await drive.close();
    await expect(disk.read(Buffer.alloc(16), 0, 16, 0)).rejects.toMatchObject({ code: 'ECLOSED' });
  });

  it('streams the drive contents through getStream', async () => {
    const drive = await memory();
    await drive.write(0, filled(1 << 20, 3));
    const disk = new DriveDisk(drive);
    let total = 0;
    for await (const chunk of await disk.getStream(0, null, 65536)) {
      expect((chunk as Buffer).every((b) => b === 3)).toBe(true);
      total += (chunk as Buffer).length;
    }
    expect(total).toBe(1 << 20);
    await drive.close();
  });
});
