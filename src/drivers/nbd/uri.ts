import { BlockError } from '../../errors.js';

/** The IANA port for NBD, used when an `nbd://` URI names none. */
export const NBD_DEFAULT_PORT = 10809;

/** `nbd` driver options decoded from a URI. */
export interface NbdUriOptions {
  driver: 'nbd';
  server: { type: 'inet'; host: string; port: number } | { type: 'unix'; path: string };
  export: string;
  /** nbds:// URIs: TLS credentials as the `nbd` driver takes them. */
  tls?: { mode: 'x509'; dir?: string } | { mode: 'psk'; file: string; username?: string };
  tlsHostname?: string;
  /** `x-dirty-bitmap=CONTEXT`: QEMU's option of that name (block status reports that meta context). */
  xDirtyBitmap?: string;
}

/** Query parameters of the TLS forms (libnbd's spellings). */
const TLS_PARAMS = ['tls-certificates', 'tls-psk-file', 'tls-username', 'tls-hostname', 'tls-verify-peer'];

/**
 * Not in the NBD URI spec nor in QEMU's URIs: QEMU's nbd option of that name as a query
 * parameter, so a command that takes a URI (`blocklayer map`) can show a dirty bitmap.
 */
const X_DIRTY_BITMAP = 'x-dirty-bitmap';

/** True for a target spelled as an NBD URI (`nbd://`, `nbd+tcp://`, `nbd+unix://`, and the TLS forms). */
export function isNbdUri(target: string): boolean {
  return /^nbds?(\+(tcp|unix))?:\/\//i.test(target);
}

/**
 * Parses an NBD URI (NetworkBlockDevice/nbd doc/uri.md): `nbd://host[:port]/[export]` or
 * `nbd+unix:///[export]?socket=/path`. The export is the percent-decoded path after its first
 * slash. TLS forms (`nbds://`, `nbds+unix://`) take libnbd's `tls-certificates=DIR` (a QEMU
 * tls-creds-x509 client directory; default: the system CAs), or `tls-psk-file=FILE` with
 * `tls-username` (default qemu), and `tls-hostname`. Any form takes `x-dirty-bitmap=CONTEXT`
 * (QEMU's nbd option). Anything malformed is EINVAL.
 */
export function parseNbdUri(target: string): NbdUriOptions {
  const bad = (why: string) => new BlockError('EINVAL', `'${target}': ${why}`, { field: 'filename' });
  const m = /^(nbds?)(?:\+(tcp|unix))?:\/\//i.exec(target);
  if (!m) throw bad('not an NBD URI (nbd://host[:port]/export or nbd+unix:///export?socket=path)');
  const secure = (m[1] as string).toLowerCase() === 'nbds';
  const transport = (m[2] ?? 'tcp').toLowerCase();
  let url: URL;
  try {
    // The scheme is swapped for a plain one so that URL parses host, port, path and query the same way for every form.
    url = new URL(`nbd://${target.slice(m[0].length)}`);
  } catch {
    throw bad('malformed URI');
  }
  let exportName: string;
  try {
    exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  } catch {
    throw bad('malformed percent-encoding in the export name');
  }
  const allowed = [...(secure ? TLS_PARAMS : []), X_DIRTY_BITMAP];
  const params = [...url.searchParams.keys()].filter((k) => !allowed.includes(k) && !(transport === 'unix' && k === 'socket'));
  if (!secure && TLS_PARAMS.some((k) => url.searchParams.has(k))) throw bad('TLS parameters need an nbds:// URI');
  // libnbd takes the user of an nbds:// URI as the PSK username; passwords never go in a URI.
  const pskUser = secure && url.searchParams.has('tls-psk-file') && !url.password ? url.username : '';
  if ((url.username && !pskUser) || url.password) throw bad('user names and passwords are not supported');
  if (pskUser && !url.searchParams.has('tls-username')) {
    try {
      url.searchParams.set('tls-username', decodeURIComponent(pskUser));
    } catch {
      throw bad('malformed percent-encoding in the user name');
    }
  }
  const tls = secure ? tlsFrom(url.searchParams, bad) : {};
  if (url.hash) throw bad('a fragment is not allowed');
  const context = url.searchParams.get(X_DIRTY_BITMAP);
  if (context === '') throw bad(`empty ${X_DIRTY_BITMAP}`);
  const meta = context !== null ? { xDirtyBitmap: context } : {};
  if (transport === 'unix') {
    if (url.hostname !== '') throw bad('nbd+unix:// takes no host (nbd+unix:///export?socket=/path)');
    const socket = url.searchParams.get('socket');
    if (!socket) throw bad('nbd+unix:// needs ?socket=/path');
    if (params.length > 0) throw bad(`unsupported query parameter '${params[0]}'`);
    return { driver: 'nbd', server: { type: 'unix', path: socket }, export: exportName, ...tls, ...meta };
  }
  if (params.length > 0) throw bad(`unsupported query parameter '${params[0]}'`);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === '') throw bad('no host');
  const port = url.port === '' ? NBD_DEFAULT_PORT : Number(url.port);
  return { driver: 'nbd', server: { type: 'inet', host, port }, export: exportName, ...tls, ...meta };
}

function tlsFrom(q: URLSearchParams, bad: (why: string) => BlockError): Pick<NbdUriOptions, 'tls' | 'tlsHostname'> {
  const certs = q.get('tls-certificates');
  const psk = q.get('tls-psk-file');
  const username = q.get('tls-username');
  const hostname = q.get('tls-hostname');
  const verify = q.get('tls-verify-peer');
  // Turning verification off would make TLS protect nothing against a man in the middle.
  if (verify !== null && verify !== 'true' && verify !== '1') throw bad('tls-verify-peer=false is not supported');
  if (certs !== null && psk !== null) throw bad('give tls-certificates or tls-psk-file, not both');
  if (certs === '' || psk === '' || username === '' || hostname === '') throw bad('empty TLS parameter');
  if (username !== null && psk === null) throw bad('tls-username goes with tls-psk-file');
  const tls: NbdUriOptions['tls'] =
    psk !== null ? { mode: 'psk', file: psk, ...(username !== null ? { username } : {}) } : { mode: 'x509', ...(certs !== null ? { dir: certs } : {}) };
  return { tls, ...(hostname !== null ? { tlsHostname: hostname } : {}) };
}
