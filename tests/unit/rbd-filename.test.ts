import { describe, expect, it } from 'vitest';
import { parseRbdFilename } from '../../src/index.js';

describe('parseRbdFilename (QEMU rbd: syntax)', () => {
  it.each([
    ['rbd:pool/image', { driver: 'rbd', pool: 'pool', image: 'image' }],
    ['rbd:pool/image@snap', { driver: 'rbd', pool: 'pool', image: 'image', snapshot: 'snap' }],
    ['rbd:pool/ns/image', { driver: 'rbd', pool: 'pool', namespace: 'ns', image: 'image' }],
    [
      'rbd:pool/image@snap:conf=/x:id=admin',
      { driver: 'rbd', pool: 'pool', image: 'image', snapshot: 'snap', conf: '/x', user: 'admin' },
    ],
    [
      'rbd:pool/ns/image:keyring=/etc/ceph/k:key=AQB==',
      { driver: 'rbd', pool: 'pool', namespace: 'ns', image: 'image', keyring: '/etc/ceph/k', keySecret: 'AQB==' },
    ],
    [
      'rbd:p/i:client_mount_timeout=10:rbd_cache=false',
      { driver: 'rbd', pool: 'p', image: 'i', config: { client_mount_timeout: '10', rbd_cache: 'false' } },
    ],
  ])('%s', (filename, expected) => {
    expect(parseRbdFilename(filename)).toEqual(expected);
  });

  it('a backslash escapes : @ / and = inside names and values', () => {
    expect(parseRbdFilename('rbd:po\\:ol/im\\@a\\/ge@sn\\:ap:conf=/a\\:b\\=c')).toEqual({
      driver: 'rbd',
      pool: 'po:ol',
      image: 'im@a/ge',
      snapshot: 'sn:ap',
      conf: '/a:b=c',
    });
  });

  it.each([
    ['file:/x', /must start with 'rbd:'/],
    ['rbd:pool', /expected pool\/image/],
    ['rbd:/image', /pool name is empty/],
    ['rbd:pool/', /image name is empty/],
    ['rbd:pool/image@', /snapshot name is empty/],
    ['rbd:a/b/c/d', /too many \//],
    ['rbd:pool/image:conf', /option 'conf' needs a value/],
    ['rbd:pool/image::id=x', /empty option name/],
  ])('%s is refused with EINVAL naming the filename field', (filename, message) => {
    expect(() => parseRbdFilename(filename)).toThrow(message);
    try {
      parseRbdFilename(filename);
    } catch (e) {
      expect(e).toMatchObject({ code: 'EINVAL', field: 'filename' });
    }
  });
});
