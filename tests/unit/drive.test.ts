import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { BlockError, BlockLayer, defineDriver, type IoErrorEvent, openDrive, VirtualClock } from '../../src/index.js';
import { testProtocolDriver } from '../helpers/test-protocol-driver.js';

describe('Drive', () => {
  it('closing with requests in flight settles every one exactly once, then emits closed once', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const d = await layer.openDrive({ driver: 'null', size: '1M', latencyNs: 1_000_000 });
    const settled = new Array(50).fill(0);
    const ops = Array.from({ length: 50 }, (_, i) =>
      (i % 2 ? d.read(0, 512) : d.write(0, new Uint8Array(512))).then(
        () => settled[i]++,
        () => settled[i]++,
      ),
    );
    let closedEvents = 0;
    d.on('closed', () => closedEvents++);
    const closing = d.close();
    await expect(d.read(0, 512)).rejects.toMatchObject({ code: 'ECLOSED' });
    await clock.runUntilIdle();
    await closing;
    await Promise.all(ops);
    expect(settled.every((n) => n === 1)).toBe(true);
    expect(closedEvents).toBe(1);
    await d.close();
    expect(closedEvents).toBe(1);
    expect(layer.listDrives()).toHaveLength(0);
  });

  it('await using closes the drive at the end of the scope', async () => {
    const layer = new BlockLayer();
    let drive: Awaited<ReturnType<typeof layer.openDrive>> | undefined;
    {
      await using d = await layer.openDrive({ driver: 'memory', size: 4096 });
      drive = d;
      await d.write(0, new Uint8Array([1]));
    }
    expect(drive.closed).toBe(true);
  });

  it('out-of-range requests are refused with the offset and size, counted as invalid, nothing written', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: 4096 });
    await expect(d.write(4000, new Uint8Array(200).fill(7))).rejects.toThrow(/write: range 4000\+200 is beyond the end of drive drive\d+ \(4096 bytes\)/);
    await expect(d.read(-1, 10)).rejects.toMatchObject({ code: 'EINVAL', offset: -1 });
    await expect(d.read(0.5, 10)).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(d.discard(4096, 1)).rejects.toMatchObject({ code: 'EINVAL', offset: 4096, length: 1 });
    const s = d.stats();
    expect(s).toMatchObject({ invalidWrOperations: 1, invalidRdOperations: 2, invalidUnmapOperations: 1, wrOperations: 0 });
    expect((await d.read(4000, 96)).every((b) => b === 0)).toBe(true);
  });

  it('a request aborted before it reaches the driver rejects with ECANCELED and never touches the data', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'memory', size: 4096 });
    const ac = new AbortController();
    ac.abort();
    await expect(d.write(0, new Uint8Array([5]), { signal: ac.signal })).rejects.toMatchObject({ code: 'ECANCELED' });
    expect((await d.read(0, 1))[0]).toBe(0);
    expect(d.stats().wrOperations).toBe(0);
  });

  it('stats() counts bytes, operations, failures, total times and idle time like query-blockstats', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    layer.registerDriver(
      testProtocolDriver('failing-writes', 1 << 20, {
        read: async (_o, b) => void b.fill(1),
        write: async () => {
          throw Object.assign(new Error('disk on fire'), { code: 'EIO' });
        },
      }),
    );
    const d = await layer.openDrive({ driver: 'failing-writes' });
    const errors: IoErrorEvent[] = [];
    d.on('io-error', (e) => errors.push(e));
    await d.read(0, 1000);
    await d.read(1000, 24);
    await expect(d.write(10, new Uint8Array(5))).rejects.toMatchObject({ code: 'EIO', offset: 10 });
    await d.flush();
    await d.discard(0, 4096);
    await clock.advance(5);
    const s = d.stats();
    expect(s).toMatchObject({
      rdBytes: 1024,
      rdOperations: 2,
      wrBytes: 0,
      wrOperations: 0,
      failedWrOperations: 1,
      flushOperations: 1,
      unmapOperations: 1,
      unmapBytes: 4096,
      idleTimeNs: 5_000_000,
      inFlight: 0,
    });
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ operation: 'write', offset: 10, length: 5 });
    expect(errors[0].error).toBeInstanceOf(BlockError);
    expect(errors[0].error.message).toContain('disk on fire');
  });

  it('total time per kind adds up the latency of each request', async () => {
    const clock = new VirtualClock();
    const layer = new BlockLayer({ clock });
    const d = await layer.openDrive({ driver: 'null', latencyNs: 2_000_000 });
    const all = [d.read(0, 512), d.read(0, 512), d.write(0, new Uint8Array(1))];
    await clock.runUntilIdle();
    await Promise.all(all);
    expect(d.stats()).toMatchObject({ rdTotalTimeNs: 4_000_000, wrTotalTimeNs: 2_000_000, wrHighestOffset: 1 });
  });

  it('openDrive without a layer uses the process-wide default layer', async () => {
    const d = await openDrive({ driver: 'memory', size: '64k' });
    expect(d.length).toBe(65536);
    await d.close();
  });
});

describe('options', () => {
  const layer = new BlockLayer();
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['a missing child filename', { driver: 'raw', file: { driver: 'file' } }, /^file\.filename: required$/],
    ['a missing required child', { driver: 'raw' }, /^file: required$/],
    ['an unknown option', { driver: 'raw', file: { driver: 'memory', size: 1, sise: 2 } }, /^file\.sise: unknown option$/],
    ['an unknown driver', { driver: 'raw', file: { driver: 'nfs' } }, /^file\.driver: unknown driver 'nfs'/],
    ['a missing driver', { file: {} }, /^driver: required$/],
    ['a bad size', { driver: 'memory', size: '12 parsecs' }, /^size: must be a size in bytes/],
    ['a negative raw offset', { driver: 'raw', offset: -5, file: { driver: 'memory', size: 10 } }, /^offset: must not be negative/],
    ['a raw window beyond the file', { driver: 'raw', offset: 8, size: 8, file: { driver: 'memory', size: 10 } }, /^size: offset 8 \+ size 8 is beyond/],
    ['a bad drive id', { id: '1x', driver: 'null' }, /^id: must start with a letter/],
  ];
  for (const [what, opts, message] of cases) {
    it(`${what} is refused with EINVAL naming the field`, async () => {
      const e = await layer.openDrive(opts as never).catch((x) => x);
      expect(e).toBeInstanceOf(BlockError);
      expect(e.code).toBe('EINVAL');
      expect(e.message).toMatch(message);
    });
  }

  it('a child told read-write opens read-write under a read-only parent, as QEMU does (the parent stays read-only)', async () => {
    const d = await layer.openDrive({ driver: 'raw', readOnly: true, file: { driver: 'memory', size: 1, readOnly: false } });
    expect(d.node.readOnly).toBe(true);
    expect(d.node.child('file')!.readOnly).toBe(false);
    await expect(d.write(0, new Uint8Array(1))).rejects.toMatchObject({ code: 'EROFS' });
    await d.close();
  });

  it('a raw window maps offsets into its child', async () => {
    const mem = await layer.openDrive({ id: 'mem', driver: 'memory', size: '1M' });
    await mem.close();
    const d = await layer.openDrive({ driver: 'raw', offset: 4096, size: 8192, file: { driver: 'memory', size: '1M' } });
    expect(d.length).toBe(8192);
    await d.write(0, new Uint8Array([1, 2, 3]));
    const file = d.node.child('file')!;
    const buf = new Uint8Array(3);
    await file.read(4096, buf);
    expect([...buf]).toEqual([1, 2, 3]);
    await expect(d.read(8190, 4)).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('size strings use QEMU suffixes (powers of 1024)', async () => {
    const d = await layer.openDrive({ driver: 'null', size: '2G' });
    expect(d.length).toBe(2 * 1024 ** 3);
    const e = await layer.openDrive({ driver: 'memory', size: '1.5k' });
    expect(e.length).toBe(1536);
  });

  it('the null driver reads zeros by default and leaves the buffer with readZeroes off', async () => {
    const a = await layer.openDrive({ driver: 'null' });
    expect((await a.read(0, 4)).every((b) => b === 0)).toBe(true);
    const b = await layer.openDrive({ driver: 'null', readZeroes: false });
    expect([...(await b.read(0, new Uint8Array([7, 7])))]).toEqual([7, 7]);
  });

  it("a user's driver plugs in by name, as a drive and as a child of raw", async () => {
    const l = new BlockLayer();
    const seen: string[] = [];
    l.registerDriver(
      defineDriver({
        name: 'counting',
        capabilities: { kind: 'protocol' },
        schema: z.object({ size: z.number() }).strict(),
        async open({ options }) {
          const mem = new Uint8Array(options.size);
          return {
            alignment: 1,
            length: () => options.size,
            read: async (o, b) => {
              seen.push(`r${o}`);
              b.set(mem.subarray(o, o + b.length));
            },
            write: async (o, data) => {
              seen.push(`w${o}`);
              mem.set(data, o);
            },
            flush: async () => {},
            discard: async () => {},
            blockStatus: async (offset, length) => ({ offset, length, data: true, zero: false, allocated: true, depth: 0 }),
            close: async () => {},
          };
        },
      }),
    );
    const d = await l.openDrive({ driver: 'raw', offset: 10, file: { driver: 'counting', size: 100 } });
    await d.write(0, new Uint8Array([4]));
    expect((await d.read(0, 1))[0]).toBe(4);
    expect(seen).toEqual(['w10', 'r10']);
    expect(() => l.registerDriver({ name: 'counting' } as never)).toThrow(/already registered/);
  });
});
