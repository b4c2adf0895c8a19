import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockError, BlockLayer, vmdkDriver } from '../../src/index.js';

let dir: string;
const layer = new BlockLayer();
const SIZE = 3 * 1024 * 1024;
const sources: Record<string, Buffer> = {};

/** A small image made by our creator and filled through our driver. */
async function make(name: string, options: Record<string, unknown>): Promise<void> {
  const file = path.join(dir, name);
  fs.writeFileSync(file, '');
  const node = await layer.openNode({ driver: 'file', filename: file });
  await vmdkDriver.create!.create(node, SIZE, options);
  await node.unref();
  if (options.subformat !== 'streamOptimized') {
    const d = await layer.openDrive({ driver: 'vmdk', file: { driver: 'file', filename: file } });
    await d.write(0, new Uint8Array(100_000).fill(0x5a));
    await d.write(2 * 1024 * 1024 + 777, new Uint8Array(70_000).fill(0xa5));
    if (options.zeroed_grain) await d.writeZeroes(0, 65536);
    await d.close();
  }
  sources[name] = fs.readFileSync(file);
}

/** A stream image with one deflated grain behind its marker (grain 1), as QEMU's convert writes them. */
function addCompressedGrain(b: Buffer): Buffer {
  const gd = Number(b.readBigUInt64LE(56)) * 512;
  const gt = b.readUInt32LE(gd) * 512;
  const z = zlib.deflateSync(Buffer.alloc(65536, 0x33));
  const marker = Buffer.alloc(Math.ceil((12 + z.length) / 512) * 512);
  marker.writeBigUInt64LE(128n, 0);
  marker.writeUInt32LE(z.length, 8);
  z.copy(marker, 12);
  b.writeUInt32LE(b.length / 512, gt + 4);
  return Buffer.concat([b, marker]);
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocklayer-vmdk-unit-'));
  await make('sparse.vmdk', {});
  await make('zeroed.vmdk', { zeroed_grain: true });
  await make('stream.vmdk', { subformat: 'streamOptimized' });
  sources['stream.vmdk'] = addCompressedGrain(sources['stream.vmdk']);
});
afterAll(async () => {
  await layer.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function readAll(file: string): Promise<Uint8Array> {
  const d = await layer.openDrive({ driver: 'vmdk', readOnly: true, file: { driver: 'file', filename: file } });
  try {
    // A spoilt capacity may be large (its tables must still fit in the file): read the first 8 MiB.
    const n = Math.min(d.length, 8 * 1024 * 1024);
    await d.blockStatusMap(0, n);
    return await d.read(0, n);
  } finally {
    await d.close();
  }
}

describe('vmdk images of our own, unspoilt and spoilt', () => {
  it('read back what was written (a compressed grain too)', async () => {
    const stream = path.join(dir, 'stream-check.vmdk');
    fs.writeFileSync(stream, sources['stream.vmdk']);
    const s = await readAll(stream);
    expect(s.subarray(65536, 131072).every((b) => b === 0x33)).toBe(true);
    expect(s.subarray(0, 65536).every((b) => b === 0)).toBe(true);
    const z = path.join(dir, 'zeroed-check.vmdk');
    fs.writeFileSync(z, sources['zeroed.vmdk']);
    const d = await readAll(z);
    expect(d.subarray(0, 65536).every((b) => b === 0)).toBe(true);
    expect(d.subarray(65536, 100_000).every((b) => b === 0x5a)).toBe(true);
  });

  it('random byte mutations give reads or BlockErrors, never other exceptions or hangs (property)', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...Object.keys(sources)),
        fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }), region: fc.constantFrom('header', 'descriptor', 'tables', 'any') }), { minLength: 1, maxLength: 8 }),
        async (source, mutations) => {
          const b = Buffer.from(sources[source]);
          for (const m of mutations) {
            const [start, len] = m.region === 'header' ? [0, 512] : m.region === 'descriptor' ? [512, 10240] : m.region === 'tables' ? [10752, 65536 - 10752] : [0, b.length];
            b[start + (m.at % len)] = m.value;
          }
          const file = path.join(dir, `mut-${n++}.vmdk`);
          fs.writeFileSync(file, b);
          const t0 = performance.now();
          try {
            await readAll(file);
          } catch (e) {
            if (!(e instanceof BlockError)) throw e;
          } finally {
            fs.rmSync(file);
          }
          expect(performance.now() - t0).toBeLessThan(1000);
        },
      ),
      { numRuns: Number(process.env.PROP_RUNS ?? 300) },
    );
  }, 120_000);
});
