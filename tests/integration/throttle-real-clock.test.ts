import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';

// Behaviour on the real clock (not a speed measurement): the limit holds within timer jitter.
describe('throttling on the real clock', () => {
  it('an iops limit of 200 admits about 200 requests per second after the initial burst', async () => {
    const layer = new BlockLayer();
    const drive = await layer.openDrive({ driver: 'null', size: '1G', throttle: { iopsTotal: 200 } });
    let stop = false;
    let done = 0;
    const start = performance.now();
    const workers = Array.from({ length: 16 }, async () => {
      const buf = new Uint8Array(512);
      while (!stop) {
        await drive.read(0, buf);
        done++;
      }
    });
    await new Promise((r) => setTimeout(r, 1500));
    stop = true;
    const elapsed = (performance.now() - start) / 1000;
    const admittedInWindow = done;
    await drive.close();
    await Promise.all(workers);
    // From empty buckets: avg/10 + 1 = 21 at once, then 200/s.
    const expected = 21 + 200 * elapsed;
    expect(admittedInWindow).toBeLessThanOrEqual(expected * 1.05 + 2);
    expect(admittedInWindow).toBeGreaterThanOrEqual(expected * 0.8);
  });
});
