import { BlockError } from '../errors.js';

/** The IANA port for NBD, used when an `nbd://` URI names none. */
export const NBD_DEFAULT_PORT = 10809;

/** `nbd` driver options decoded from a URI. */
export interface NbdUriOptions {
  driver: 'nbd';
  server: { type: 'inet'; host: string; port: number } | { type: 'unix'; path: string };
  export: string;
}

/** True for a target spelled as an NBD URI (`nbd://`, `nbd+tcp://`, `nbd+unix://`, and the TLS forms). */
export function isNbdUri(target: string): boolean {
  return /^nbds?(\+(tcp|unix))?:\/\//i.test(target);
}

/**
 * Parses an NBD URI (NetworkBlockDevice/nbd doc/uri.md): `nbd://host[:port]/[export]` or
 * `nbd+unix:///[export]?socket=/path`. The export is the percent-decoded path after its first
 * slash. TLS forms (`nbds://`) are refused with ENOTSUP; anything malformed with EINVAL.
 */
export function parseNbdUri(target: string): NbdUriOptions {
  const bad = (why: string) => new BlockError('EINVAL', `'${target}': ${why}`, { field: 'filename' });
  const m = /^(nbds?)(?:\+(tcp|unix))?:\/\//i.exec(target);
  if (!m) throw bad('not an NBD URI (nbd://host[:port]/export or nbd+unix:///export?socket=path)');
  if ((m[1] as string).toLowerCase() === 'nbds') throw new BlockError('ENOTSUP', `'${target}': NBD over TLS is not supported`, { field: 'filename' });
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
  const params = [...url.searchParams.keys()];
  if (url.username || url.password) throw bad('user names and passwords are not supported');
  if (url.hash) throw bad('a fragment is not allowed');
  if (transport === 'unix') {
    if (url.hostname !== '') throw bad('nbd+unix:// takes no host (nbd+unix:///export?socket=/path)');
    const socket = url.searchParams.get('socket');
    if (!socket) throw bad('nbd+unix:// needs ?socket=/path');
    const unknown = params.filter((k) => k !== 'socket');
    if (unknown.length > 0) throw bad(`unsupported query parameter '${unknown[0]}'`);
    return { driver: 'nbd', server: { type: 'unix', path: socket }, export: exportName };
  }
  if (params.length > 0) throw bad(`unsupported query parameter '${params[0]}'`);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === '') throw bad('no host');
  const port = url.port === '' ? NBD_DEFAULT_PORT : Number(url.port);
  return { driver: 'nbd', server: { type: 'inet', host, port }, export: exportName };
}
