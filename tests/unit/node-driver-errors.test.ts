// A driver's close, flush, reopen or resize may fail with whatever its backend throws (an errno
// error from a file handle): the node hands it on as a BlockError with a code and the node's name.
import * as z from 'zod';
import { describe, expect, it } from 'vitest';
import { BlockError, BlockLayer, type DriverInstance, defineDriver } from '../../src/index.js';
import { testProtocolDriver } from '../helpers/test-protocol-driver.js';

/** What fs.FileHandle.close and friends reject with: a plain Error with an errno `code`. */
function errnoError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: i/o error`), { code, errno: -5, syscall: 'close' });
}

const failing = (code: string) => () => Promise.reject(errnoError(code));

/** A format with two children (`a` and `b`) that closes and flushes nothing of its own. */
const pair = defineDriver({
  name: 'test-pair',
  capabilities: { kind: 'format' },
  schema: z.object({}).strict(),
  children: { a: 'required', b: 'required' },
  async open({ children }): Promise<DriverInstance> {
    const a = children.get('a')!;
    return {
      alignment: 1,
      length: () => a.length,
      read: (o, b) => a.read(o, b),
      write: (o, d) => a.write(o, d),
      flush: () => a.flush(),
      discard: (o, l) => a.discard(o, l),
      blockStatus: (o, l) => a.blockStatus(o, l),
      close: async () => {},
    };
  },
});

function layerWith(...drivers: ReturnType<typeof testProtocolDriver>[]): BlockLayer {
  const layer = new BlockLayer();
  for (const d of drivers) layer.registerDriver(d);
  return layer;
}

describe('errors out of a driver are BlockErrors', () => {
  it('a failing close: unref rejects with a BlockError naming the node, its code from the errno', async () => {
    const layer = layerWith(testProtocolDriver('failclose', 4096, { close: failing('EIO') }));
    const node = await layer.openNode({ driver: 'failclose', nodeName: 'bad' });
    const e = await node.unref().then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(BlockError);
    expect(e).toMatchObject({ code: 'EIO', node: 'bad' });
    expect(node.isClosed).toBe(true);
    await layer.close();
  });

  it('a failing close below a drive: Drive.close rejects with a BlockError naming the child', async () => {
    const layer = layerWith(testProtocolDriver('failclose', 4096, { close: failing('EBADF') }));
    const drive = await layer.openDrive({ driver: 'raw', file: { driver: 'failclose', nodeName: 'below' } });
    const e = await drive.close().then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(BlockError);
    expect(e).toMatchObject({ code: 'EBADF', node: 'below' });
    await layer.close();
  });

  it('a child that fails to close does not keep its sibling open', async () => {
    const layer = layerWith(testProtocolDriver('failclose', 4096, { close: failing('EIO') }), testProtocolDriver('goodclose', 4096));
    layer.registerDriver(pair);
    const good = await layer.openNode({ driver: 'goodclose', nodeName: 'good' });
    const top = await layer.openNode({ driver: 'test-pair', a: { driver: 'failclose', nodeName: 'bad' }, b: good });
    await good.unref(); // the pair holds the only reference now
    await expect(top.unref()).rejects.toMatchObject({ name: 'BlockError', code: 'EIO', node: 'bad' });
    expect(good.isClosed).toBe(true);
    await layer.close();
  });

  it('a failing flush rejects with a BlockError, from the node and through a drive', async () => {
    const layer = layerWith(testProtocolDriver('failflush', 4096, { flush: failing('ENOSPC') }));
    const node = await layer.openNode({ driver: 'failflush', nodeName: 'f' });
    const e = await node.flush().then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(BlockError);
    expect(e).toMatchObject({ code: 'ENOSPC', node: 'f' });
    const drive = await layer.openDrive({ driver: 'raw', file: node });
    await expect(drive.flush()).rejects.toMatchObject({ name: 'BlockError', code: 'ENOSPC' });
    await drive.close();
    await node.unref();
    await layer.close();
  });

  it('a failing resize and reopen reject with BlockErrors', async () => {
    const layer = layerWith(
      testProtocolDriver('failing', 4096, {
        truncate: failing('EFBIG'),
        reopen: failing('EACCES'),
      }),
    );
    const node = await layer.openNode({ driver: 'failing', nodeName: 'n' });
    const resized = await node.truncate(8192).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(resized).toBeInstanceOf(BlockError);
    expect(resized).toMatchObject({ code: 'EFBIG', node: 'n' });
    const reopened = await node.reopen(true).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(reopened).toBeInstanceOf(BlockError);
    expect(reopened).toMatchObject({ code: 'EACCES', node: 'n' });
    expect(node.readOnly).toBe(false);
    await node.unref();
    await layer.close();
  });
});
