import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { BlockLayer, type Drive } from '../../src/index.js';

const FIXTURES = path.join(import.meta.dirname, '../fixtures/qcow2');

/**
 * The checked-in qcow2 fixtures copied into a fresh temp dir for one test file (registered
 * with beforeAll/afterAll), with a layer to open them and helpers to patch copies.
 */
export function qcow2Workspace(prefix: string) {
  const expected = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'expected.json'), 'utf8')) as Record<string, string>;
  const layer = new BlockLayer();
  const ws = {
    dir: '',
    layer,
    expected,
    /** Opens a file of the workspace as a qcow2 drive. */
    open: (name: string, extra: Record<string, unknown> = {}) =>
      layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: path.join(ws.dir, name) }, ...extra }),
    /** sha256 of a drive's whole guest view. */
    hash: async (d: Drive) => createHash('sha256').update(await d.read(0, d.length)).digest('hex'),
    /** A copy of a fixture with bytes patched by `patch`, under a new name. */
    patched(fixture: string, name: string, patch: (b: Buffer) => void): string {
      const b = fs.readFileSync(path.join(FIXTURES, fixture));
      patch(b);
      fs.writeFileSync(path.join(ws.dir, name), b);
      return name;
    },
  };
  beforeAll(() => {
    ws.dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    for (const f of fs.readdirSync(FIXTURES)) fs.copyFileSync(path.join(FIXTURES, f), path.join(ws.dir, f));
  });
  afterAll(async () => {
    await layer.close();
    fs.rmSync(ws.dir, { recursive: true, force: true });
  });
  return ws;
}
