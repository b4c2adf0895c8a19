import { describe, expect, it } from 'vitest';
import { BlockLayer, type IoErrorEvent } from '../../src/index.js';

describe('blkdebug fault injection', () => {
  it('fails the matching request with the rule code, counts it as failed and reports io-error', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({
      driver: 'blkdebug',
      rules: [{ event: 'write', code: 'ENOSPC', offset: 8192, once: true }],
      file: { driver: 'memory', size: '1M' },
    });
    const errors: IoErrorEvent[] = [];
    d.on('io-error', (e) => errors.push(e));
    await d.write(0, new Uint8Array(4096).fill(1));
    await expect(d.write(4096, new Uint8Array(8192).fill(2))).rejects.toMatchObject({ code: 'ENOSPC', offset: 4096 });
    // once: the same write succeeds the second time
    await d.write(4096, new Uint8Array(8192).fill(2));
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ operation: 'write', offset: 4096, length: 8192 });
    expect(d.stats()).toMatchObject({ wrOperations: 2, failedWrOperations: 1 });
    expect((await d.read(0, 1))[0]).toBe(1);
  });

  it('`after` lets the first requests through and fails from the n-th on', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'blkdebug', rules: [{ event: 'read', after: 3 }], file: { driver: 'null', size: '1M' } });
    await d.read(0, 512);
    await d.read(0, 512);
    await expect(d.read(0, 512)).rejects.toMatchObject({ code: 'EIO' });
    await expect(d.read(0, 512)).rejects.toMatchObject({ code: 'EIO' });
  });

  it('align forces read-modify-write on unaligned requests and keeps the bytes right', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'blkdebug', align: 4096, file: { driver: 'memory', size: '1M' } });
    await d.write(100, new Uint8Array([9, 8, 7]));
    expect([...(await d.read(99, 5))]).toEqual([0, 9, 8, 7, 0]);
  });

  it('refuses an unknown event, naming the field', async () => {
    const layer = new BlockLayer();
    await expect(
      layer.openDrive({ driver: 'blkdebug', rules: [{ event: 'nope' }], file: { driver: 'null' } }),
    ).rejects.toThrow(/^rules\.0\.event: /);
  });
});
