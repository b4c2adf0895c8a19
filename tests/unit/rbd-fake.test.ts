import { describe, expect, it, vi } from 'vitest';
import { BlockError, BlockLayer, FakeRbdCluster, FakeRbdImage, isBlockError } from '../../src/index.js';
import { settlesWithBlockErrors } from '../../src/drivers/rbd/adapter.js';
import { targetOptions } from '../../src/tools/image.js';
import { openImage } from '../../src/layer.js';
import { rejection } from '../helpers/rejection.js';

const MiB = 1 << 20;

function pattern(length: number, seed: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** Byte equality whatever the view type (Drive.read returns a Buffer). */
function expectBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  expect(Buffer.compare(Buffer.from(actual.buffer, actual.byteOffset, actual.length), Buffer.from(expected.buffer, expected.byteOffset, expected.length))).toBe(0);
}


function setup(options: { order?: number; size?: number; users?: Record<string, string> } = {}) {
  const cluster = new FakeRbdCluster({ users: options.users });
  cluster.createImage('rbd', 'disk', options.size ?? 16 * MiB, { order: options.order ?? 20 });
  const layer = new BlockLayer();
  return { cluster, layer };
}

describe('rbd driver on the fake adapter', () => {
  it('reads back what was written, at unaligned offsets too', async () => {
    const { cluster, layer } = setup();
    const d = await layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', adapter: cluster.open });
    expect(d.length).toBe(16 * MiB);
    const data = pattern(10_000, 7);
    await d.write(MiB - 3, data);
    expectBytes(await d.read(MiB - 3, data.length), data);
    expect([...(await d.read(MiB - 4, 1))]).toEqual([0]);
    await d.close();
  });

  it('stripes a request over objects: a write across three 1 MiB objects is three object writes', async () => {
    const { cluster, layer } = setup({ order: 20 });
    const d = await layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', adapter: cluster.open });
    const image = cluster.opened[0] as FakeRbdImage;
    await d.write(MiB - 512, new Uint8Array(MiB + 1024).fill(1));
    expect(image.stats).toMatchObject({ writes: 1, objectWrites: 3, bytesWritten: MiB + 1024, objects: 3 });
    await d.read(0, 4 * MiB);
    expect(image.stats).toMatchObject({ reads: 1, objectReads: 4 });
    await d.close();
  });

  it('keeps many requests in flight at once', async () => {
    const { cluster, layer } = setup();
    const d = await layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', adapter: cluster.open });
    const image = cluster.opened[0] as FakeRbdImage;
    await Promise.all(Array.from({ length: 32 }, (_, i) => d.write(i * 4096, pattern(4096, i))));
    expect(image.stats.maxInFlight).toBe(32);
    const back = await Promise.all(Array.from({ length: 32 }, (_, i) => d.read(i * 4096, 4096)));
    back.forEach((b, i) => {
      expectBytes(b, pattern(4096, i));
    });
    await d.close();
  });

  it('discard frees whole objects and zeroes the partial ones', async () => {
    const { cluster, layer } = setup({ order: 20 });
    const d = await layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', adapter: cluster.open });
    const image = cluster.opened[0] as FakeRbdImage;
    await d.write(0, new Uint8Array(3 * MiB).fill(9));
    await d.discard(MiB / 2, 2 * MiB);
    expect(image.stats).toMatchObject({ discards: 1, objectDiscards: 3, objects: 2 });
    const back = await d.read(0, 3 * MiB);
    expect(back.subarray(0, MiB / 2).every((b) => b === 9)).toBe(true);
    expect(back.subarray(MiB / 2, MiB / 2 + 2 * MiB).every((b) => b === 0)).toBe(true);
    expect(back.subarray(MiB / 2 + 2 * MiB).every((b) => b === 9)).toBe(true);
    await d.close();
  });

  it('write-zeroes goes to the adapter as write-zeroes, not as data writes', async () => {
    const { cluster, layer } = setup();
    const d = await layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', adapter: cluster.open });
    const image = cluster.opened[0] as FakeRbdImage;
    await d.write(0, new Uint8Array(8192).fill(5));
    await d.writeZeroes(100, 5000);
    expect(image.stats).toMatchObject({ writes: 1, writeZeroes: 1 });
    const back = await d.read(0, 8192);
    expect(back[99]).toBe(5);
    expect(back.subarray(100, 5100).every((b) => b === 0)).toBe(true);
    expect(back[5100]).toBe(5);
    await d.close();
  });

  it('flush reaches the adapter', async () => {
    const { cluster, layer } = setup();
    const d = await layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', adapter: cluster.open });
    await d.flush();
    expect((cluster.opened[0] as FakeRbdImage).stats.flushes).toBe(1);
    await d.close();
  });

  it('block status reports written objects as data and untouched ones as zeros', async () => {
    const { cluster, layer } = setup({ order: 20 });
    const d = await layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', adapter: cluster.open });
    await d.write(2 * MiB + 10, new Uint8Array(10).fill(1));
    const map = await d.blockStatusMap();
    expect(map.map(({ offset, length, data, zero }) => ({ offset, length, data, zero }))).toEqual([
      { offset: 0, length: 2 * MiB, data: false, zero: true },
      { offset: 2 * MiB, length: MiB, data: true, zero: false },
      { offset: 3 * MiB, length: 13 * MiB, data: false, zero: true },
    ]);
    await d.close();
  });

  it('an rbd: target opens read-only for the inspecting commands (info, map, convert); openImage opens it read-write unless asked', async () => {
    const { cluster, layer } = setup();
    const inspect = await layer.openDrive({ ...(await targetOptions('rbd:rbd/disk')), adapter: cluster.open });
    expect(inspect.readOnly).toBe(true);
    expect(cluster.opened.at(-1)!.readOnly).toBe(true);
    await inspect.close();
    const rw = await openImage('rbd:rbd/disk', { adapter: cluster.open }, layer);
    expect([rw.readOnly, cluster.opened.at(-1)!.readOnly]).toEqual([false, false]);
    await rw.close();
    const ro = await openImage('rbd:rbd/disk', { adapter: cluster.open, readOnly: true }, layer);
    expect([ro.readOnly, cluster.opened.at(-1)!.readOnly]).toEqual([true, true]);
    await layer.close();
  });

  it('info names the pool, image and object size', async () => {
    const { cluster, layer } = setup({ order: 20 });
    const d = await layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', adapter: cluster.open });
    expect(d.node.info()).toMatchObject({ pool: 'rbd', image: 'disk', objectSize: MiB, order: 20 });
    await d.close();
  });

  it('a snapshot opens read-only with the contents it was taken with', async () => {
    const { cluster, layer } = setup();
    const d = await layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', adapter: cluster.open });
    await d.write(0, new Uint8Array(4).fill(1));
    cluster.snapshot('rbd', 'disk', 's1');
    await d.write(0, new Uint8Array(4).fill(2));
    const s = await layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', snapshot: 's1', readOnly: true, adapter: cluster.open });
    expect(s.readOnly).toBe(true);
    expect([...(await s.read(0, 4))]).toEqual([1, 1, 1, 1]);
    expect(await rejection(s.write(0, new Uint8Array(1)))).toMatchObject({ code: 'EROFS' });
    await s.close();
    await d.close();
  });

  it('opening a snapshot read-write fails with EROFS naming the snapshot field', async () => {
    const { cluster, layer } = setup();
    cluster.snapshot('rbd', 'disk', 's1');
    const e = await rejection(layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', snapshot: 's1', adapter: cluster.open }));
    expect(e).toMatchObject({ code: 'EROFS', field: 'snapshot' });
    expect((e as Error).message).toMatch(/read-only/);
  });

  it('a missing pool, image or snapshot is ENOENT; a wrong key or unknown user is EACCES', async () => {
    const { cluster, layer } = setup({ users: { admin: 'right' } });
    const open = (o: Record<string, unknown>) => rejection(layer.openDrive({ driver: 'rbd', adapter: cluster.open, ...o }));
    expect(await open({ pool: 'nopool', image: 'disk' })).toMatchObject({ code: 'ENOENT', message: expect.stringMatching(/pool 'nopool'/) });
    expect(await open({ pool: 'rbd', image: 'nodisk' })).toMatchObject({ code: 'ENOENT', message: expect.stringMatching(/nodisk/) });
    expect(await open({ pool: 'rbd', image: 'disk', snapshot: 'nosnap', readOnly: true })).toMatchObject({ code: 'ENOENT' });
    expect(await open({ pool: 'rbd', image: 'disk', keySecret: 'wrong' })).toMatchObject({ code: 'EACCES' });
    expect(await open({ pool: 'rbd', image: 'disk', user: 'mallory' })).toMatchObject({ code: 'EACCES', message: expect.stringMatching(/client\.mallory/) });
    const ok = await layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', 'key-secret': 'right', adapter: cluster.open });
    await ok.close();
  });

  it('an adapter failure reaches the caller as a BlockError with its code', async () => {
    const { cluster, layer } = setup();
    const d = await layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', adapter: cluster.open });
    (cluster.opened[0] as FakeRbdImage).failWith('read', 'EIO');
    const e = await rejection(d.read(0, 512));
    expect(isBlockError(e, 'EIO')).toBe(true);
    await d.close();
  });

  it('a plain Error from an adapter is wrapped naming operation and offset; an image marked as settling with BlockErrors has its error passed on as it is', async () => {
    const plain = new FakeRbdImage({ size: MiB, order: 16 });
    plain.read = () => Promise.reject(new Error('socket gone'));
    const d1 = await new BlockLayer().openDrive({ driver: 'rbd', adapter: plain });
    expect(await rejection(d1.read(4096, 512))).toMatchObject({ name: 'BlockError', code: 'EIO', offset: 4096, message: expect.stringContaining('rbd read at 4096+512') });
    await d1.close();
    const marked = Object.assign(new FakeRbdImage({ size: MiB, order: 16 }), { [settlesWithBlockErrors]: true });
    const own = new BlockError('ENOSPC', 'rbd write at 0+1 on the marked image', { offset: 0 });
    marked.write = () => Promise.reject(own);
    const d2 = await new BlockLayer().openDrive({ driver: 'rbd', adapter: marked });
    expect(await rejection(d2.write(0, new Uint8Array(1)))).toBe(own);
    await d2.close();
  });

  it('an RbdImage handed in as adapter needs no pool or image and is closed with the drive', async () => {
    const image = new FakeRbdImage({ size: MiB, order: 16 });
    const close = vi.spyOn(image, 'close');
    const d = await new BlockLayer().openDrive({ driver: 'rbd', adapter: image });
    await d.write(0, new Uint8Array([1]));
    expect(image.stats.writes).toBe(1);
    await d.close();
    expect(close).toHaveBeenCalledOnce();
  });

  it('closing waits for requests in flight', async () => {
    const { cluster, layer } = setup();
    const d = await layer.openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk', adapter: cluster.open });
    const writes = Array.from({ length: 8 }, (_, i) => d.write(i * 512, new Uint8Array(512).fill(i + 1)));
    await d.close();
    await Promise.all(writes);
    expect((cluster.opened[0] as FakeRbdImage).stats).toMatchObject({ writes: 8, inFlight: 0 });
  });

  it.each([
    [{ image: 'disk' }, 'pool', /pool: required/],
    [{ pool: 'rbd' }, 'image', /image: required/],
    [{ pool: 'rbd', image: 'disk', keyring: '/k', keySecret: 'x' }, 'keySecret', /either keyring or key-secret/],
    [{ pool: 'rbd', image: 'disk', adapter: { read() {} } }, 'adapter', /RbdImage/],
    [{ pool: 'rbd', image: 'disk', bogus: 1 }, 'bogus', /unknown option/],
  ])('bad options %j are EINVAL naming the field %s', async (options, field, message) => {
    const e = await rejection(new BlockLayer().openDrive({ driver: 'rbd', ...options }));
    expect(e).toMatchObject({ code: 'EINVAL', field });
    expect((e as Error).message).toMatch(message);
  });
});

describe('fake rbd image', () => {
  it('refuses writes when read-only and requests after close', async () => {
    const image = new FakeRbdImage({ size: MiB, readOnly: true });
    expect(await rejection(image.write(0, new Uint8Array(1)))).toMatchObject({ code: 'EROFS' });
    await image.close();
    expect(await rejection(image.read(0, new Uint8Array(1)))).toMatchObject({ code: 'ECLOSED' });
  });

  it('rejects an object order outside 4 KiB to 32 MiB', () => {
    expect(() => new FakeRbdImage({ size: MiB, order: 11 })).toThrow(/order/);
  });
});

describe('rbd driver without Ceph libraries', () => {
  // librados is loaded before librbd: each missing library must be named on its own, whatever
  // this machine has installed (the no-optional-packages CI pass has neither).
  async function openWith(env: Record<string, string>): Promise<unknown> {
    vi.resetModules();
    for (const [k, v] of Object.entries(env)) vi.stubEnv(k, v);
    try {
      const fresh = await import('../../src/index.js');
      return await rejection(new fresh.BlockLayer().openDrive({ driver: 'rbd', pool: 'rbd', image: 'disk' }));
    } finally {
      vi.unstubAllEnvs();
      vi.resetModules();
    }
  }

  it('importing works, and opening an rbd drive without librados fails with ENOTSUP naming librados', async () => {
    const e = await openWith({ BLOCKLAYER_LIBRADOS: 'librados-not-installed.so.2' });
    expect(e).toMatchObject({ code: 'ENOTSUP' });
    expect((e as Error).message).toMatch(/librados-not-installed\.so\.2 could not be loaded/);
    expect((e as Error).message).toMatch(/apt-get install librados2 librbd1/);
  });

  it('with librados loadable but librbd missing, the error names librbd', async () => {
    // libc stands in for a loadable librados: the loader reaches librbd and names it.
    const e = await openWith({ BLOCKLAYER_LIBRADOS: 'libc.so.6', BLOCKLAYER_LIBRBD: 'librbd-not-installed.so.1' });
    expect(e).toMatchObject({ code: 'ENOTSUP' });
    expect((e as Error).message).toMatch(/librbd-not-installed\.so\.1 could not be loaded/);
  });
});
