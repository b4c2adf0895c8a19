import { describe, expect, it } from 'vitest';
import { openWithTemporaryOverlay } from '../../src/overlay.browser.js';
import { BlockLayer } from '../../src/index.js';

describe("the browser build's temporary overlay (a qcow2 on a growing memory node)", () => {
  it('takes writes over a read-only base, reads the rest from it, and leaves the base untouched', async () => {
    const layer = new BlockLayer();
    const base = await layer.openNode({ driver: 'memory', size: 3 << 20 });
    await base.write(0, new Uint8Array(3 << 20).fill(0x11));
    const top = await openWithTemporaryOverlay((o) => layer.openNode(o), { driver: 'raw', file: base });
    expect(top.driver.name).toBe('qcow2');
    const data = new Uint8Array(200_000).fill(0x22);
    await top.write(1_000_000, data);
    const all = new Uint8Array(3 << 20);
    await top.read(0, all);
    expect(all[999_999]).toBe(0x11);
    expect(all[1_000_000]).toBe(0x22);
    expect(all[1_199_999]).toBe(0x22);
    expect(all[1_200_000]).toBe(0x11);
    // the overlay's memory file grew past its initial layout
    expect(top.child('file')!.length).toBeGreaterThan(262144);
    const b = new Uint8Array(1);
    await base.read(1_000_000, b);
    expect(b[0]).toBe(0x11);
    await top.unref();
    await base.unref();
    await layer.close();
  });
});
