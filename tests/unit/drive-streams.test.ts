import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it, vi } from 'vitest';
import { BlockError, BlockLayer, createDriveReadStream, type Drive, VirtualClock } from '../../src/index.js';
import { qcow2Workspace } from '../helpers/qcow2-workspace.js';
import { rejection } from '../helpers/rejection.js';

const ws = qcow2Workspace('blocklayer-streams-');
const tick = () => new Promise((r) => setImmediate(r));

/** A memory drive of `size` bytes of varied content. */
async function filled(size = 300_000): Promise<{ layer: BlockLayer; d: Drive; bytes: Uint8Array }> {
  const layer = new BlockLayer();
  const d = await layer.openDrive({ driver: 'memory', size });
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 7 + (i >> 9)) & 0xff;
  await d.write(0, bytes);
  return { layer, d, bytes };
}

async function webBytes(stream: ReadableStream<Uint8Array>): Promise<{ data: Buffer; chunks: number[] }> {
  const parts: Uint8Array[] = [];
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
  }
  return { data: Buffer.concat(parts), chunks: parts.map((p) => p.length) };
}

async function nodeBytes(stream: AsyncIterable<Uint8Array>): Promise<{ data: Buffer; chunks: number[] }> {
  const parts: Uint8Array[] = [];
  for await (const chunk of stream) parts.push(chunk);
  return { data: Buffer.concat(parts), chunks: parts.map((p) => p.length) };
}

/** A drive whose reads wait in its throttle queue (iopsRead 1 on a virtual clock: one read a second). */
async function throttled(): Promise<{ layer: BlockLayer; d: Drive; clock: VirtualClock }> {
  const clock = new VirtualClock();
  const layer = new BlockLayer({ clock });
  const d = await layer.openDrive({ driver: 'null', size: '1M', throttle: { iopsRead: 1 } });
  return { layer, d, clock };
}

describe('Drive.readableStream (WHATWG ReadableStream)', () => {
  it('gives the bytes drive.read gives, whole and for ranges (end inclusive), in chunks of chunkSize', async () => {
    const { layer, d, bytes } = await filled();
    const whole = await webBytes(d.readableStream());
    expect(whole.data.equals(Buffer.from(await d.read(0, d.length)))).toBe(true);
    expect(whole.chunks).toEqual([65536, 65536, 65536, 65536, 300_000 - 4 * 65536]);
    const some = await webBytes(d.readableStream({ start: 1000, end: 50_999, chunkSize: 7000 }));
    expect(some.data.equals(Buffer.from(bytes.subarray(1000, 51_000)))).toBe(true);
    expect(some.chunks).toEqual([7000, 7000, 7000, 7000, 7000, 7000, 7000, 1000]);
    expect((await webBytes(d.readableStream({ start: 5, end: 5 }))).data).toEqual(Buffer.from([bytes[5]]));
    // Nothing to read: end = start - 1, or start at the end of the drive.
    expect((await webBytes(d.readableStream({ start: 10, end: 9 }))).chunks).toEqual([]);
    expect((await webBytes(d.readableStream({ start: d.length }))).chunks).toEqual([]);
    await layer.close();
  });

  it('reads only as the consumer asks: a slow reader keeps at most two reads ahead', async () => {
    const { layer, d } = await filled();
    const reads = vi.spyOn(d, 'read');
    const stream = d.readableStream({ chunkSize: 4096 });
    await tick();
    expect(reads.mock.calls.length).toBeLessThanOrEqual(1);
    const reader = stream.getReader();
    let consumed = 0;
    let most = 0;
    for (;;) {
      const { done } = await reader.read();
      if (done) break;
      consumed++;
      await tick();
      await tick();
      most = Math.max(most, reads.mock.calls.length - consumed);
    }
    expect(consumed).toBe(Math.ceil(d.length / 4096));
    expect(most).toBeLessThanOrEqual(2);
    await layer.close();
  });

  it('cancel mid-way cancels the read waiting in the throttle queue and settles everything', async () => {
    const { layer, d, clock } = await throttled();
    const reader = d.readableStream({ chunkSize: 512 }).getReader();
    expect((await reader.read()).value).toHaveLength(512);
    await tick();
    // The next read waits in the queue for a second of the virtual clock that never passes.
    expect(d.stats().throttle?.queuedReads).toBe(1);
    await reader.cancel(new Error('not needed'));
    expect(d.stats().throttle?.queuedReads).toBe(0);
    expect(d.stats().inFlight).toBe(0);
    expect(clock.now()).toBe(0);
    expect(await reader.read()).toEqual({ done: true, value: undefined });
    await layer.close();
  });

  it('the signal errors the stream with ECANCELED carrying its reason, at once (also before the start)', async () => {
    const { layer, d } = await throttled();
    const ac = new AbortController();
    const reader = d.readableStream({ chunkSize: 512, signal: ac.signal }).getReader();
    await reader.read();
    await tick();
    const reason = new Error('user left');
    ac.abort(reason);
    const e = await rejection(reader.read());
    expect(e).toBeInstanceOf(BlockError);
    expect(e).toMatchObject({ code: 'ECANCELED', cause: reason });
    await tick();
    expect(d.stats().inFlight).toBe(0);
    await expect(d.readableStream({ signal: AbortSignal.abort('before') }).getReader().read()).rejects.toMatchObject({ code: 'ECANCELED', cause: 'before' });
    await layer.close();
  });

  it('a read error becomes the stream’s error, the drive’s BlockError as is', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'blkdebug', rules: [{ event: 'read', code: 'EIO', offset: 70_000 }], file: { driver: 'memory', size: 1 << 20 } } as never);
    const e = await rejection(webBytes(d.readableStream()));
    expect(e).toBeInstanceOf(BlockError);
    expect(e).toMatchObject({ code: 'EIO', offset: 65536 });
    await layer.close();
  });

  it('bad options and a closed drive error the stream (EINVAL naming the field, ECLOSED); nothing throws', async () => {
    const { layer, d } = await filled(4096);
    const cases: [unknown, string][] = [
      ['yes', 'options'],
      [{ start: -1 }, 'start'],
      [{ start: 4097 }, 'start'],
      [{ start: 1.5 }, 'start'],
      [{ end: 4096 }, 'end'],
      [{ start: 10, end: 8 }, 'end'],
      [{ end: '9' }, 'end'],
      [{ chunkSize: 0 }, 'chunkSize'],
      [{ chunkSize: 2 ** 60 }, 'chunkSize'],
      [{ signal: {} }, 'signal'],
    ];
    for (const [options, field] of cases) {
      const stream = (d.readableStream as (o: unknown) => ReadableStream<Uint8Array>)(options);
      const e = await rejection(stream.getReader().read());
      expect(e, JSON.stringify(options)).toBeInstanceOf(BlockError);
      expect(e).toMatchObject({ code: 'EINVAL', field });
    }
    await d.close();
    await expect(d.readableStream().getReader().read()).rejects.toMatchObject({ code: 'ECLOSED' });
    await layer.close();
  });
});

describe('Drive.createReadStream / createDriveReadStream (Node Readable)', () => {
  it('gives the bytes drive.read gives, whole and for ranges (end inclusive), in chunks of highWaterMark', async () => {
    const { layer, d, bytes } = await filled();
    const whole = await nodeBytes(d.createReadStream());
    expect(whole.data.equals(Buffer.from(await d.read(0, d.length)))).toBe(true);
    expect(whole.chunks).toEqual([65536, 65536, 65536, 65536, 300_000 - 4 * 65536]);
    const some = await nodeBytes(createDriveReadStream(d, { start: 1000, end: 50_999, highWaterMark: 7000 }));
    expect(some.data.equals(Buffer.from(bytes.subarray(1000, 51_000)))).toBe(true);
    expect(some.chunks).toEqual([7000, 7000, 7000, 7000, 7000, 7000, 7000, 1000]);
    expect((await nodeBytes(d.createReadStream({ start: 10, end: 9 }))).chunks).toEqual([]);
    await layer.close();
  });

  it('stream.pipeline to a file writes the image’s guest view (a qcow2 image with holes and a backing file)', async () => {
    for (const name of ['v3.qcow2', 'over.qcow2']) {
      const d = await ws.open(name, { readOnly: true });
      const out = path.join(ws.dir, `${name}.raw`);
      await pipeline(d.createReadStream({ highWaterMark: 5000 }), fs.createWriteStream(out));
      const file = fs.readFileSync(out);
      expect(file.length).toBe(d.length);
      expect(createHash('sha256').update(file).digest('hex')).toBe(ws.expected[name]);
      await d.close();
    }
  });

  it('a slow consumer keeps at most a few chunks in flight (backpressure)', async () => {
    const { layer, d } = await filled();
    const reads = vi.spyOn(d, 'read');
    let consumed = 0;
    let most = 0;
    const slow = new Writable({
      highWaterMark: 1,
      write(_chunk, _encoding, done) {
        consumed++;
        most = Math.max(most, reads.mock.calls.length - consumed);
        setTimeout(done, 2);
      },
    });
    const stream = d.createReadStream({ highWaterMark: 4096 });
    await tick();
    expect(reads).not.toHaveBeenCalled(); // nothing is read before someone asks
    await pipeline(stream, slow);
    expect(consumed).toBe(Math.ceil(d.length / 4096));
    expect(most).toBeLessThanOrEqual(3);
    await layer.close();
  });

  it('destroy mid-way cancels the read waiting in the throttle queue; close comes once it settled', async () => {
    const { layer, d, clock } = await throttled();
    const stream = d.createReadStream({ highWaterMark: 512 });
    const errors: unknown[] = [];
    stream.on('error', (e) => errors.push(e));
    const it = stream[Symbol.asyncIterator]();
    expect(((await it.next()).value as Uint8Array).length).toBe(512);
    await tick();
    expect(d.stats().throttle?.queuedReads).toBe(1);
    const closed = new Promise((r) => stream.once('close', r));
    stream.destroy();
    await closed;
    expect(errors).toEqual([]);
    expect(d.stats().inFlight).toBe(0);
    expect(d.stats().throttle?.queuedReads).toBe(0);
    expect(clock.now()).toBe(0);
    await layer.close();
  });

  it('the signal destroys the stream with ECANCELED carrying its reason (a pipeline rejects with it)', async () => {
    const { layer, d } = await throttled();
    const ac = new AbortController();
    const sink = new Writable({ write: (_c, _e, done) => done() });
    const piping = pipeline(d.createReadStream({ highWaterMark: 512, signal: ac.signal }), sink);
    await tick();
    await tick();
    const reason = new Error('shutting down');
    ac.abort(reason);
    const e = await rejection(piping);
    expect(e).toBeInstanceOf(BlockError);
    expect(e).toMatchObject({ code: 'ECANCELED', cause: reason });
    expect(d.stats().inFlight).toBe(0);
    const early = await rejection(nodeBytes(d.createReadStream({ signal: AbortSignal.abort('early') })));
    expect(early).toMatchObject({ code: 'ECANCELED', cause: 'early' });
    await layer.close();
  });

  it('read errors, bad options and a closed drive become the stream’s error; nothing throws', async () => {
    const layer = new BlockLayer();
    const d = await layer.openDrive({ driver: 'blkdebug', rules: [{ event: 'read', code: 'EIO', offset: 70_000 }], file: { driver: 'memory', size: 1 << 20 } } as never);
    expect(await rejection(nodeBytes(d.createReadStream()))).toMatchObject({ code: 'EIO', offset: 65536 });
    for (const [options, field] of [
      [{ start: -1 }, 'start'],
      [{ end: 1 << 20 }, 'end'],
      [{ highWaterMark: -5 }, 'highWaterMark'],
      [{ signal: 'stop' }, 'signal'],
      [42, 'options'],
    ] as [unknown, string][]) {
      const e = await rejection(nodeBytes((d.createReadStream as (o: unknown) => AsyncIterable<Uint8Array>)(options)));
      expect(e, JSON.stringify(options)).toBeInstanceOf(BlockError);
      expect(e).toMatchObject({ code: 'EINVAL', field });
    }
    await d.close();
    expect(await rejection(nodeBytes(d.createReadStream()))).toMatchObject({ code: 'ECLOSED' });
    await layer.close();
  });
});
