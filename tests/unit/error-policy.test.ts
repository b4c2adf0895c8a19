import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BlockLayer, driveStringToOptions, type IoErrorEvent } from '../../src/index.js';

type Rule = { event: string; code?: string; offset?: number; once?: boolean; after?: number };

async function openDebug(rules: Rule[], policy: { rerror?: string; werror?: string }) {
  const layer = new BlockLayer();
  const d = await layer.openDrive({ driver: 'blkdebug', rules, file: { driver: 'memory', size: 1 << 20 }, ...policy } as never);
  const events: IoErrorEvent[] = [];
  d.on('io-error', (e) => events.push(e));
  const injector = d.node.info().injector as { clear(): void; add(r: Rule): void };
  return { layer, d, events, injector };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('error policies (QEMU rerror / werror)', () => {
  it('report (the default) fails the request and says so in a BLOCK_IO_ERROR-like event', async () => {
    const { layer, d, events } = await openDebug([{ event: 'write', code: 'EIO', once: true }], {});
    await expect(d.write(0, new Uint8Array(8))).rejects.toMatchObject({ code: 'EIO' });
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ device: d.id, nodeName: d.node.name, operation: 'write', action: 'report', nospace: false });
    expect(events[0].reason).toMatch(/injected EIO/);
    expect(d.stats().failedWrOperations).toBe(1);
    expect(d.isPaused).toBe(false);
    await layer.close();
  });

  it('ignore completes a failed read as if it had succeeded, and still reports the event', async () => {
    const { layer, d, events } = await openDebug([{ event: 'read', code: 'EIO', once: true }], { rerror: 'ignore' });
    await expect(d.read(0, 512)).resolves.toHaveLength(512);
    expect(events[0]).toMatchObject({ operation: 'read', action: 'ignore' });
    expect(d.stats().rdOperations).toBe(1);
    expect(d.stats().failedRdOperations).toBe(0);
    expect(d.stats().inFlight).toBe(0);
    await layer.close();
  });

  it('stop holds the failed write, pauses the drive, holds new requests; resume retries in order and everything lands', async () => {
    const { layer, d, events, injector } = await openDebug([{ event: 'write', code: 'ENOSPC' }], { werror: 'stop' });
    const paused: unknown[] = [];
    d.on('paused', (e) => paused.push(e));
    let settled = 0;
    const first = d.write(0, new Uint8Array([1, 1])).then(() => settled++);
    const second = d.write(1, new Uint8Array([2])).then(() => settled++);
    await tick();
    expect(d.isPaused).toBe(true);
    expect(d.ioStatus).toBe('nospace');
    expect(paused).toHaveLength(1);
    expect(events.map((e) => [e.action, e.nospace])).toEqual([
      ['stop', true],
      ['stop', true],
    ]);
    // While paused a new request is held: it does not reach the node (which would fail it).
    const third = d.write(2, new Uint8Array([3])).then(() => settled++);
    const read = d.read(0, 3);
    await tick();
    expect(settled).toBe(0);
    expect(d.stats().inFlight).toBe(4);
    injector.clear(); // "space was freed"
    const resumed: unknown[] = [];
    d.on('resumed', (e) => resumed.push(e));
    d.resume();
    await Promise.all([first, second, third]);
    expect([...(await read)]).toEqual([1, 2, 3]);
    expect(resumed).toEqual([{ retried: 2 }]);
    expect(d.ioStatus).toBe('ok');
    expect(d.stats().failedWrOperations).toBe(0);
    expect(d.stats().wrOperations).toBe(3);
    await layer.close();
  });

  it('retried requests keep their order of arrival: the later of two overlapping writes wins', async () => {
    const { layer, d, injector } = await openDebug([{ event: 'write', code: 'EIO' }], { werror: 'stop' });
    const a = d.write(0, new Uint8Array([0xaa]));
    const b = d.write(0, new Uint8Array([0xbb]));
    await tick();
    injector.clear();
    d.resume();
    await Promise.all([a, b]);
    expect((await d.read(0, 1))[0]).toBe(0xbb);
    await layer.close();
  });

  it('enospc stops on ENOSPC and reports any other error', async () => {
    const { layer, d, events, injector } = await openDebug([{ event: 'write', code: 'EIO', once: true }], { werror: 'enospc' });
    await expect(d.write(0, new Uint8Array(1))).rejects.toMatchObject({ code: 'EIO' });
    expect(d.isPaused).toBe(false);
    injector.add({ event: 'write', code: 'ENOSPC', once: true });
    const w = d.write(0, new Uint8Array([7]));
    await tick();
    expect(d.isPaused).toBe(true);
    expect(events.map((e) => e.action)).toEqual(['report', 'stop']);
    d.resume();
    await w;
    expect((await d.read(0, 1))[0]).toBe(7);
    await layer.close();
  });

  it('flush, discard and write-zeroes follow werror; reads follow rerror', async () => {
    const { layer, d, injector } = await openDebug([{ event: 'flush', code: 'EIO', once: true }], { werror: 'stop', rerror: 'report' });
    const f = d.flush();
    await tick();
    expect(d.isPaused).toBe(true);
    d.resume();
    await f;
    injector.add({ event: 'read', code: 'EIO', once: true });
    await expect(d.read(0, 1)).rejects.toMatchObject({ code: 'EIO' });
    expect(d.isPaused).toBe(false);
    await layer.close();
  });

  it('closing a paused drive fails the held failed requests with their error and the waiting ones with ECLOSED', async () => {
    const { layer, d } = await openDebug([{ event: 'write', code: 'ENOSPC' }], { werror: 'stop' });
    const failed = d.write(0, new Uint8Array(1)).catch((e) => e);
    await tick();
    const waiting = d.write(8, new Uint8Array(1)).catch((e) => e);
    await d.close();
    expect(await failed).toMatchObject({ code: 'ENOSPC' });
    expect(await waiting).toMatchObject({ code: 'ECLOSED' });
    await layer.close();
  });

  it('a request held while paused can be aborted and is then never sent', async () => {
    const { layer, d, injector } = await openDebug([{ event: 'write', code: 'EIO', once: true }], { werror: 'stop' });
    const first = d.write(0, new Uint8Array([1]));
    await tick();
    const ac = new AbortController();
    const second = d.write(0, new Uint8Array([2]), { signal: ac.signal });
    expect(d.stats().inFlight).toBe(2);
    ac.abort();
    await expect(second).rejects.toMatchObject({ code: 'ECANCELED' });
    expect(d.stats().inFlight).toBe(1); // the aborted one no longer counts
    injector.clear();
    d.resume();
    await first;
    expect((await d.read(0, 1))[0]).toBe(1);
    await layer.close();
  });

  it("refuses 'enospc' for reads and unknown actions, naming the field", async () => {
    const layer = new BlockLayer();
    await expect(layer.openDrive({ driver: 'memory', size: 512, rerror: 'enospc' })).rejects.toMatchObject({ code: 'EINVAL', field: 'rerror' });
    await expect(layer.openDrive({ driver: 'memory', size: 512, werror: 'pause' as never })).rejects.toMatchObject({ code: 'EINVAL', field: 'werror' });
    await layer.close();
  });

  it('the -drive spellings rerror=/werror= open a drive with those policies', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-policy-'));
    const file = path.join(dir, 'disk.img');
    fs.writeFileSync(file, Buffer.alloc(4096));
    const layer = new BlockLayer();
    const options = driveStringToOptions(`file=${file},format=raw,werror=stop,rerror=ignore`);
    const parent = { driver: 'blkdebug', rules: [{ event: 'write', code: 'EIO', once: true }], file: options.file, werror: options.werror, rerror: options.rerror };
    const d = await layer.openDrive(parent as never);
    const w = d.write(0, new Uint8Array([5]));
    await tick();
    expect(d.isPaused).toBe(true);
    d.resume();
    await w;
    expect((await d.read(0, 1))[0]).toBe(5);
    await layer.close();
    expect(() => driveStringToOptions(`file=${file},rerror=enospc`)).toThrow(/'enospc' invalid read error action/);
    fs.rmSync(dir, { recursive: true });
  });
});
