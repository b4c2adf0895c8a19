import { describe, expect, it } from 'vitest';
import { isNbdUri, NBD_DEFAULT_PORT, parseNbdUri } from '../../src/drivers/nbd/uri.js';

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

  it("nbds:// takes libnbd's TLS parameters: tls-certificates (x509), tls-psk-file with the URI user or tls-username, tls-hostname", () => {
    expect(parseNbdUri('nbds://h:1/e')).toMatchObject({ server: { port: 1 }, export: 'e', tls: { mode: 'x509' } });
    expect(parseNbdUri('nbds://h/e?tls-certificates=/c&tls-hostname=disk.example')).toMatchObject({ tls: { mode: 'x509', dir: '/c' }, tlsHostname: 'disk.example' });
    expect(parseNbdUri('nbds://alice@h/e?tls-psk-file=/k.psk')).toMatchObject({ tls: { mode: 'psk', file: '/k.psk', username: 'alice' } });
    expect(parseNbdUri('nbds+unix:///e?socket=/s&tls-psk-file=/k&tls-username=bob')).toMatchObject({ server: { type: 'unix', path: '/s' }, tls: { mode: 'psk', file: '/k', username: 'bob' } });
    for (const bad of ['nbds://h/e?tls-verify-peer=false', 'nbds://h/e?tls-certificates=/c&tls-psk-file=/k', 'nbds://u@h/e', 'nbds://h/e?tls-username=x', 'nbd://h/e?tls-certificates=/c', 'nbds://h/e?tls-certificates=']) {
      expect(() => parseNbdUri(bad), bad).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'filename' }));
    }
  });

  it('a missing socket, a host on unix, unknown query parameters, credentials, no host or a bad port are EINVAL', () => {
    for (const bad of ['nbd+unix:///x', 'nbd+unix://h/x?socket=/s', 'nbd://h/e?tls=1', 'nbd://u:p@h/e', 'nbd:///e', 'nbd://h:99999/e', 'nbd://h/%zz', 'http://h/e']) {
      expect(() => parseNbdUri(bad), bad).toThrow(expect.objectContaining({ code: 'EINVAL', field: 'filename' }));
    }
  });

  it('isNbdUri recognizes the NBD schemes only', () => {
    expect(['nbd://h/e', 'nbd+unix:///e?socket=/s', 'NBD://h', 'nbds://h'].every(isNbdUri)).toBe(true);
    expect(['rbd:pool/img', '/tmp/nbd://x', 'nbd:h:1', 'disk.qcow2'].some(isNbdUri)).toBe(false);
  });
});
