import { describe, expect, it } from 'vitest';
import { isNbdUri, NBD_DEFAULT_PORT, parseNbdUri } from '../../src/nbd/uri.js';

describe('NBD URIs (nbd doc/uri.md)', () => {
  it('nbd://host:port/export gives inet options; the port defaults to 10809 and the export to the default export', () => {
    expect(parseNbdUri('nbd://127.0.0.1:1234/disk')).toEqual({ driver: 'nbd', server: { type: 'inet', host: '127.0.0.1', port: 1234 }, export: 'disk' });
    expect(parseNbdUri('nbd://example.com')).toEqual({ driver: 'nbd', server: { type: 'inet', host: 'example.com', port: NBD_DEFAULT_PORT }, export: '' });
    expect(parseNbdUri('nbd+tcp://h:1/')).toMatchObject({ server: { port: 1 }, export: '' });
  });

  it('IPv6 hosts lose their brackets and the export name is percent-decoded (only the first slash is dropped)', () => {
    expect(parseNbdUri('nbd://[::1]:99/a%20b/c')).toEqual({ driver: 'nbd', server: { type: 'inet', host: '::1', port: 99 }, export: 'a b/c' });
  });

  it('nbd+unix:///export?socket=path gives unix options', () => {
    expect(parseNbdUri('nbd+unix:///x?socket=/tmp/s.sock')).toEqual({ driver: 'nbd', server: { type: 'unix', path: '/tmp/s.sock' }, export: 'x' });
  });

  it('TLS forms are ENOTSUP; a missing socket, a host on unix, unknown query parameters, credentials, no host or a bad port are EINVAL', () => {
    expect(() => parseNbdUri('nbds://h/e')).toThrow(expect.objectContaining({ code: 'ENOTSUP' }));
    for (const bad of ['nbd+unix:///x', 'nbd+unix://h/x?socket=/s', 'nbd://h/e?tls=1', 'nbd://u:p@h/e', 'nbd:///e', 'nbd://h:99999/e', 'nbd://h/%zz', 'http://h/e']) {
      expect(() => parseNbdUri(bad), bad).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'filename' }));
    }
  });

  it('isNbdUri recognizes the NBD schemes only', () => {
    expect(['nbd://h/e', 'nbd+unix:///e?socket=/s', 'NBD://h', 'nbds://h'].every(isNbdUri)).toBe(true);
    expect(['rbd:pool/img', '/tmp/nbd://x', 'nbd:h:1', 'disk.qcow2'].some(isNbdUri)).toBe(false);
  });
});
