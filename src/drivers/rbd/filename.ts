import { BlockError } from '../../errors.js';
import type { NodeOptions } from '../../node/driver.js';

/** Options of the `rbd` driver that an `rbd:` filename can express. */
export interface RbdFilenameOptions extends NodeOptions {
  /** Always `rbd`. */
  driver: 'rbd';
  /** RADOS pool holding the image. */
  pool: string;
  /** RADOS namespace inside the pool. */
  namespace?: string;
  /** Image name. */
  image: string;
  /** Snapshot to open (read-only). */
  snapshot?: string;
  /** Path of ceph.conf. */
  conf?: string;
  /** Ceph user (without `client.`). */
  user?: string;
  /** Path of a keyring file. */
  keyring?: string;
  /** The cephx key itself (base64). */
  keySecret?: string;
  /** Any other `key=value` pair: a librados setting, as QEMU passes them to rados_conf_set. */
  config?: Record<string, string>;
}

const fail = (filename: string, why: string) =>
  new BlockError('EINVAL', `filename: '${filename}' is not an rbd filename: ${why}`, { field: 'filename' });

/** Splits `s` at the first unescaped character of `stops`; a backslash escapes the next character. */
function token(s: string, from: number, stops: string): { value: string; end: number } {
  let value = '';
  let i = from;
  while (i < s.length && !stops.includes(s[i])) {
    if (s[i] === '\\' && i + 1 < s.length) i++;
    value += s[i];
    i++;
  }
  return { value, end: i };
}

/**
 * Parses QEMU's rbd filename syntax into `rbd` driver options:
 * `rbd:pool[/namespace]/image[@snapshot][:key=value[:key=value…]]`, where `id` is the user,
 * `conf` the ceph.conf path, `keyring` a keyring path, `key` a cephx key, any other key a
 * librados setting; `\` escapes `:`, `@`, `/`, `=` and `\`.
 */
export function parseRbdFilename(filename: string): RbdFilenameOptions {
  if (!filename.startsWith('rbd:')) throw fail(filename, "it must start with 'rbd:'");
  const s = filename;
  const pool = token(s, 4, '/:@');
  if (pool.end >= s.length || s[pool.end] !== '/') throw fail(filename, 'expected pool/image');
  if (!pool.value) throw fail(filename, 'the pool name is empty');
  const first = token(s, pool.end + 1, '/@:');
  let namespace: string | undefined;
  let image = first;
  if (s[first.end] === '/') {
    namespace = first.value;
    image = token(s, first.end + 1, '/@:');
    if (s[image.end] === '/') throw fail(filename, 'too many / (expected pool[/namespace]/image)');
  }
  if (!image.value) throw fail(filename, 'the image name is empty');
  const out: RbdFilenameOptions = { driver: 'rbd', pool: pool.value, image: image.value };
  if (namespace !== undefined) out.namespace = namespace;
  let at = image.end;
  if (s[at] === '@') {
    const snap = token(s, at + 1, ':');
    if (!snap.value) throw fail(filename, 'the snapshot name is empty');
    out.snapshot = snap.value;
    at = snap.end;
  }
  while (at < s.length) {
    // s[at] is ':' here.
    const key = token(s, at + 1, '=:');
    if (!key.value) throw fail(filename, `empty option name at position ${at + 1}`);
    if (s[key.end] !== '=') throw fail(filename, `option '${key.value}' needs a value (${key.value}=…)`);
    const value = token(s, key.end + 1, ':');
    at = value.end;
    switch (key.value) {
      case 'id':
        out.user = value.value;
        break;
      case 'conf':
        out.conf = value.value;
        break;
      case 'keyring':
        out.keyring = value.value;
        break;
      case 'key':
        out.keySecret = value.value;
        break;
      default:
        out.config = { ...out.config, [key.value]: value.value };
    }
  }
  return out;
}
