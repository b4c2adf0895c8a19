import { describe, expect, it } from 'vitest';
import { BlockLayer, checkImage, createQcow2OnNode } from '../../src/index.js';
import { existingNodeDriver } from '../helpers/existing-node-driver.js';

describe('tools open their nodes in the caller’s layer', () => {
  it('checkImage({ layer }) checks a qcow2 over a driver registered only in that layer, and leaves the layer open', async () => {
    const layer = new BlockLayer();
    try {
      const mem = await layer.openNode({ driver: 'memory', size: '16M' });
      await createQcow2OnNode(mem, { size: '8M' });
      layer.registerDriver(existingNodeDriver(mem));
      const target = { driver: 'qcow2', file: { driver: 'existing' } };
      // A private layer does not know the driver.
      await expect(checkImage(target)).rejects.toMatchObject({ code: 'EINVAL' });
      const r = await checkImage(target, { layer });
      expect(r).toMatchObject({ corruptions: 0, leaks: 0 });
      expect(layer.isClosed).toBe(false);
      // The checked node was released: the memory node is the only one left.
      const again = await layer.openNode({ driver: 'qcow2', file: { driver: 'existing' } });
      expect(again.length).toBe(8 << 20);
      await again.unref();
    } finally {
      await layer.close();
    }
  });
});
