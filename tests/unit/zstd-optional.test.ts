import Module from 'node:module';
import { afterEach, describe, expect, it, vi } from 'vitest';

// zstd-napi is loaded with require (the shipped command runs as a script, where import() has no
// loader), so hiding it means hiding it from Node's module loader.
type Loader = { _load: (request: string, ...rest: unknown[]) => unknown };
const loader = Module as unknown as Loader;
const realLoad = loader._load;

afterEach(() => {
  loader._load = realLoad;
  vi.resetModules();
});

describe('zstd-napi is optional', () => {
  it('without it, a zstd write is a BlockError ENOTSUP naming the package; zlib writes still work', async () => {
    vi.resetModules();
    loader._load = function (this: unknown, request: string, ...rest: unknown[]) {
      if (request === 'zstd-napi') throw new Error("Cannot find module 'zstd-napi'\nRequire stack: …");
      return realLoad.call(this, request, ...rest);
    };
    const { zstdCompress, deflateRaw } = await import('../../src/platform/compress.js');
    const { BlockError } = await import('../../src/errors.js');
    const err = await zstdCompress(new Uint8Array(65536)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BlockError);
    expect(err).toMatchObject({ code: 'ENOTSUP', field: 'compression_type' });
    expect((err as Error).message).toContain("'zstd-napi'");
    expect((err as Error).message).not.toContain('\n');
    expect((await deflateRaw(new Uint8Array(65536))).length).toBeLessThan(1024);
  });

  it('with it, a zstd write compresses and fzstd reads it back', async () => {
    const { zstdCompress } = await import('../../src/platform/compress.js');
    const { decompressCluster } = await import('../../src/drivers/qcow2/compressed.js');
    const data = new Uint8Array(65536).map((_, i) => i % 7);
    const frame = await zstdCompress(data);
    expect(frame.length).toBeLessThan(data.length);
    const out = new Uint8Array(65536);
    decompressCluster('zstd', frame, out, 0);
    expect(Buffer.from(out).equals(Buffer.from(data))).toBe(true);
  });
});
