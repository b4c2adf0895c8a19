import { describe, expect, it } from 'vitest';
import { parseNbdUri } from '../../src/drivers/nbd/uri.js';

describe('x-dirty-bitmap in an NBD URI', () => {
  it("any NBD URI takes x-dirty-bitmap=CONTEXT, the nbd driver's xDirtyBitmap; an empty one is EINVAL", () => {
    expect(parseNbdUri('nbd+unix:///vm?socket=/s&x-dirty-bitmap=qemu:dirty-bitmap:b0')).toEqual({
      driver: 'nbd',
      server: { type: 'unix', path: '/s' },
      export: 'vm',
      xDirtyBitmap: 'qemu:dirty-bitmap:b0',
    });
    expect(parseNbdUri('nbd://h:7/e?x-dirty-bitmap=qemu:allocation-depth')).toMatchObject({ server: { port: 7 }, xDirtyBitmap: 'qemu:allocation-depth' });
    expect(parseNbdUri('nbds://h/e?tls-certificates=/c&x-dirty-bitmap=qemu:dirty-bitmap:a%20b')).toMatchObject({ tls: { mode: 'x509', dir: '/c' }, xDirtyBitmap: 'qemu:dirty-bitmap:a b' });
    expect(parseNbdUri('nbd://h/e')).not.toHaveProperty('xDirtyBitmap');
    expect(() => parseNbdUri('nbd://h/e?x-dirty-bitmap=')).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'filename' }));
  });
});
