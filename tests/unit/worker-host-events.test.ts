// The worker's host forwards a drive's events to the page even when code on the worker's side
// listens to the same event first (the host's own listeners must not hide the page's).
import { MessageChannel } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { connectWorkerLayer, serveWorkerLayer } from '../../src/worker/index.js';

describe('blocklayer/worker host: event forwarding', () => {
  it('a resize reaches the page although the worker side listened to resize first, and only once per listener', async () => {
    const { port1, port2 } = new MessageChannel();
    const layer = new BlockLayer();
    const seenInWorker: number[] = [];
    layer.onDriveOpened((d) => d.on('resize', (e) => seenInWorker.push(e.newSize)));
    const host = serveWorkerLayer(port1, layer);
    const page = connectWorkerLayer(port2);
    try {
      const drive = await page.openDrive({ driver: 'memory', size: '1M' });
      const seenInPage: number[] = [];
      drive.on('resize', (e) => seenInPage.push(e.newSize));
      drive.on('resize', () => {}); // a second page listener asks again: still one forwarder
      await drive.resize(2 * 1024 * 1024);
      await drive.resize(3 * 1024 * 1024);
      expect(seenInWorker).toEqual([2 * 1024 * 1024, 3 * 1024 * 1024]);
      expect(seenInPage).toEqual([2 * 1024 * 1024, 3 * 1024 * 1024]);
      await drive.close();
    } finally {
      await host.close();
      port1.close();
      port2.close();
    }
  });
});
