import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';

describe('memory drive', () => {
  it('reads back what was written', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: '1M' });
    await d.write(1000, new Uint8Array([1, 2, 3]));
    expect([...(await d.read(999, 5))]).toEqual([0, 1, 2, 3, 0]);
    await d.close();
  });
});
