// The opfs driver outside a browser: not in the Node build, its options checked before any
// storage is touched, and a clear ENOTSUP where there is no Origin Private File System.
import { describe, expect, it } from 'vitest';
import { BlockLayer } from '../../src/index.js';
import { opfsDriver } from '../../src/drivers/opfs/index.js';
import { pathComponents } from '../../src/drivers/opfs/facts.js';
import { fromDomError } from '../../src/drivers/opfs/dom-errors.js';

describe('opfs driver', () => {
  it('is not a driver of the Node build', () => {
    expect(new BlockLayer().drivers.has('opfs')).toBe(false);
  });

  it('splits a path into names and refuses empty, dot and dot-dot components, backslashes and NUL', () => {
    expect(pathComponents('vms/a/disk.qcow2')).toEqual(['vms', 'a', 'disk.qcow2']);
    expect(pathComponents('/vms/disk')).toEqual(['vms', 'disk']);
    for (const bad of ['a//b', 'a/./b', '../x', 'a/', 'a\\b', 'a\0b']) expect(typeof pathComponents(bad), bad).toBe('string');
    expect(typeof pathComponents(Array.from({ length: 65 }, () => 'd').join('/'))).toBe('string');
  });

  it('refuses bad options with EINVAL naming the field, before touching any storage', async () => {
    const layer = new BlockLayer();
    layer.registerDriver(opfsDriver);
    try {
      for (const [options, field] of [
        [{ path: 'a/../b' }, 'path'],
        [{ path: '' }, 'path'],
        [{ path: 'x'.repeat(5000) }, 'path'],
        [{ path: 'a', mode: 'fast' }, 'mode'],
        [{ path: 'a', size: -1 }, 'size'],
        [{ path: 'a', extra: 1 }, ''],
      ] as const) {
        const e = await layer.openNode({ driver: 'opfs', ...options }).catch((x) => x);
        expect(e.code, JSON.stringify(options).slice(0, 40)).toBe('EINVAL');
        expect(String(e.field ?? e.message)).toContain(field);
      }
    } finally {
      await layer.close();
    }
  });

  it('is ENOTSUP where the runtime has no navigator.storage.getDirectory (Node)', async () => {
    const layer = new BlockLayer();
    layer.registerDriver(opfsDriver);
    try {
      await expect(layer.openNode({ driver: 'opfs', path: 'vms/disk' })).rejects.toMatchObject({ code: 'ENOTSUP' });
    } finally {
      await layer.close();
    }
  });

  it('maps the DOMExceptions of the File System standard to codes: quota is ENOSPC', () => {
    const dom = (name: string) => Object.assign(new Error('x'), { name });
    expect(fromDomError(dom('QuotaExceededError'), 'w', {}).code).toBe('ENOSPC');
    expect(fromDomError(dom('NotFoundError'), 'o', {}).code).toBe('ENOENT');
    expect(fromDomError(dom('NoModificationAllowedError'), 'o', {}).code).toBe('ELOCKED');
    expect(fromDomError(dom('SomethingNew'), 'o', { path: 'p' })).toMatchObject({ code: 'EIO', path: 'p' });
    expect(fromDomError(null, 'o', {}).code).toBe('EIO');
  });
});
