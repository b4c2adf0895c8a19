import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, type Drive, NbdServer, openImage } from '../../src/index.js';
import { probeNbdFormat, targetOptions } from '../../src/tools/image.js';
import { CLI } from '../helpers/cli.js';

const FIX = path.join(import.meta.dirname, '../fixtures/qcow2');
const layer = new BlockLayer();
let server: NbdServer;
let port = 0;
let qcow2Bytes: Drive;
let rawDrive: Drive;

/** The CLI in a child process (the server lives in this one, so the event loop must stay free). */
function cli(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...CLI, ...args]);
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

beforeAll(async () => {
  // The qcow2 file's bytes as they are (the file driver underneath, no format): what qemu-nbd -f raw serves.
  qcow2Bytes = await layer.openDrive({ driver: 'file', filename: path.join(FIX, 'v3.qcow2'), readOnly: true, locking: 'off' });
  rawDrive = await layer.openDrive({ driver: 'memory', size: 1024 * 1024 });
  await rawDrive.write(0, Buffer.from('QFI not quite a qcow2 header'));
  server = new NbdServer({ exports: [{ name: 'q', drive: qcow2Bytes }, { name: 'r', drive: rawDrive }] });
  const a = await server.listen({ host: '127.0.0.1', port: 0 });
  if (!('port' in a)) throw new Error('expected TCP');
  port = a.port;
});
afterAll(async () => {
  await server?.close();
  await qcow2Bytes?.close();
  await rawDrive?.close();
});

describe('format probing over NBD', () => {
  it('a qcow2 file served as raw bytes probes as qcow2 over nbd; other bytes as raw', async () => {
    expect(await probeNbdFormat({ server: { type: 'inet', host: '127.0.0.1', port }, export: 'q' })).toBe('qcow2');
    expect(await probeNbdFormat({ server: { type: 'inet', host: '127.0.0.1', port }, export: 'r' })).toBe('raw');
    expect(await targetOptions(`nbd://127.0.0.1:${port}/q`)).toMatchObject({ driver: 'qcow2', file: { driver: 'nbd', export: 'q' } });
    expect(await targetOptions(`nbd://127.0.0.1:${port}/r`)).toMatchObject({ driver: 'nbd', export: 'r' });
    // An explicit format is not second-guessed.
    expect(await targetOptions(`nbd://127.0.0.1:${port}/q`, { format: 'raw' })).toMatchObject({ driver: 'nbd' });
    expect(server.connectionCount).toBe(0); // the probing connections are closed
  });

  it('openImage of the export reads the guest view, the same bytes as the qcow2 file opened locally', async () => {
    const remote = await openImage(`nbd://127.0.0.1:${port}/q`, {}, layer);
    const local = await layer.openDrive({ driver: 'qcow2', readOnly: true, file: { driver: 'file', filename: path.join(FIX, 'v3.qcow2'), locking: 'off' } });
    expect(remote.node.driver.name).toBe('qcow2');
    expect(remote.length).toBe(local.length);
    const n = Math.min(remote.length, 4 * 1024 * 1024);
    expect(Buffer.from(await remote.read(0, n)).equals(Buffer.from(await local.read(0, n)))).toBe(true);
    await remote.close();
    await local.close();
  });

  it('blocklayer info nbd://… of a qcow2 export says qcow2 (like qemu-img info, which probes)', async () => {
    const r = await cli('info', `nbd://127.0.0.1:${port}/q`, '--json');
    expect(r.code, r.err).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ format: 'qcow2' });
    const raw = await cli('info', `nbd://127.0.0.1:${port}/r`, '--json');
    // A raw export is the nbd node itself (no raw layer above it): raw, as qemu-img info says.
    expect(JSON.parse(raw.out)).toMatchObject({ format: 'raw', 'virtual-size': 1024 * 1024 });
  });

  it('probing an export that does not exist is ENOENT naming it; a server that is not there is ENXIO', async () => {
    await expect(targetOptions(`nbd://127.0.0.1:${port}/nope`)).rejects.toMatchObject({ code: 'ENOENT', message: expect.stringContaining("'nope'") });
    await expect(targetOptions('nbd://127.0.0.1:1/x')).rejects.toMatchObject({ code: 'ENXIO' });
  });
});
