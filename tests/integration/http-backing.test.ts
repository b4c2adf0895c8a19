import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { serveStatic } from '../../examples/browser/static-server.js';

const FIXTURES = path.join(import.meta.dirname, '../fixtures/qcow2');
const expected = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'expected.json'), 'utf8')) as Record<string, string>;

describe('a qcow2 image over http with a backing file', () => {
  it("resolves the header's relative backing name against the image's URL (as QEMU does against its filename)", async () => {
    const server = await serveStatic({ '/img/': FIXTURES });
    const layer = new BlockLayer();
    try {
      const d = await layer.openDrive({ driver: 'qcow2', file: { driver: 'http', url: `${server.url}/img/over.qcow2` } });
      expect(d.node.child('backing')?.child('file')?.options.url).toBe(`${server.url}/img/base.qcow2`);
      const h = createHash('sha256')
        .update(await d.read(0, d.length))
        .digest('hex');
      expect(h).toBe(expected['over.qcow2']);
      expect(server.requests.some((r) => r.startsWith('GET /img/base.qcow2 bytes='))).toBe(true);
      // Its mode left open, a format over http opens read-only; asked read-write, it is refused as QEMU refuses it.
      expect(d.readOnly).toBe(true);
      await expect(layer.openDrive({ driver: 'qcow2', readOnly: false, file: { driver: 'http', url: `${server.url}/img/over.qcow2` } })).rejects.toMatchObject({
        code: 'EROFS',
        message: 'Block node is read-only',
      });
    } finally {
      await layer.close();
      await server.close();
    }
  });
});
