import fs from 'node:fs/promises';
import type net from 'node:net';
import path from 'node:path';
import type tls from 'node:tls';
import { BlockError } from '../../errors.js';
import { nodeNet, nodeTls } from './net-modules.js';

/** TLS with X.509 certificates (QEMU's tls-creds-x509). */
export interface NbdTlsX509 {
  /** Certificates. */
  mode: 'x509';
  /** The server's private key (PEM). */
  key: string | Buffer;
  /** The server's certificate (PEM), optionally followed by its chain. */
  cert: string | Buffer;
  /** CA certificate(s) (PEM) that client certificates must chain to (needed with verifyPeer). */
  ca?: string | Buffer | (string | Buffer)[];
  /** Ask every client for a certificate signed by `ca` and refuse those without one (default false). */
  verifyPeer?: boolean;
}

/** TLS with pre-shared keys (QEMU's tls-creds-psk): the client names an identity and proves it knows its key. */
export interface NbdTlsPsk {
  /** Pre-shared keys. */
  mode: 'psk';
  /** Keys by identity (username). */
  identities: Readonly<Record<string, Buffer>>;
}

/** TLS credentials of an NBD server. */
export type NbdTlsOptions = NbdTlsX509 | NbdTlsPsk;

/** What a connection needs to start TLS: a prepared context and the TLSSocket options. */
export interface NbdTlsSetup {
  readonly options: tls.TLSSocketOptions;
  readonly verifyPeer: boolean;
}

/** The longest identity GnuTLS and OpenSSL accept (RFC 4279: at most 2^16-1 bytes; OpenSSL caps it at 128). */
const MAX_IDENTITY = 128;

/**
 * Parses QEMU's keys.psk format: one `identity:hexkey` per line (blank lines ignored).
 * Throws BlockError EINVAL naming the line of a malformed entry.
 */
export function parsePskFile(text: string, file = 'keys.psk'): Record<string, Buffer> {
  const out: Record<string, Buffer> = Object.create(null);
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] as string).trim();
    if (line === '') continue;
    const colon = line.indexOf(':');
    const where = `${file} line ${i + 1}`;
    if (colon <= 0) throw new BlockError('EINVAL', `${where}: expected identity:hexkey`, { path: file });
    const identity = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (Buffer.byteLength(identity) > MAX_IDENTITY) throw new BlockError('EINVAL', `${where}: identity longer than ${MAX_IDENTITY} bytes`, { path: file });
    if (hex.length === 0 || hex.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(hex)) throw new BlockError('EINVAL', `${where}: the key is not an even number of hex digits`, { path: file });
    if (identity in out) throw new BlockError('EINVAL', `${where}: identity '${identity}' listed twice`, { path: file });
    out[identity] = Buffer.from(hex, 'hex');
  }
  return out;
}

/** Reads a QEMU keys.psk file (`identity:hexkey` lines) into an identity → key map. */
export async function loadPskFile(file: string): Promise<Record<string, Buffer>> {
  return parsePskFile(await readCred(file), file);
}

/**
 * Reads credentials laid out as QEMU's tls-creds-x509 / tls-creds-psk `dir` for a server:
 * x509: ca-cert.pem (optional), server-cert.pem, server-key.pem; psk: keys.psk.
 * `verifyPeer` (x509) defaults to false here; QEMU's default is true.
 */
export async function loadQemuTlsCredsDir(dir: string, mode: 'x509', options?: { verifyPeer?: boolean }): Promise<NbdTlsX509>;
export async function loadQemuTlsCredsDir(dir: string, mode: 'psk'): Promise<NbdTlsPsk>;
export async function loadQemuTlsCredsDir(dir: string, mode: 'x509' | 'psk', options: { verifyPeer?: boolean } = {}): Promise<NbdTlsOptions> {
  if (mode === 'psk') return { mode, identities: await loadPskFile(path.join(dir, 'keys.psk')) };
  if (mode !== 'x509') throw new BlockError('EINVAL', `loadQemuTlsCredsDir: unknown mode '${String(mode)}'`, { field: 'mode' });
  const [cert, key, ca] = await Promise.all([
    readCred(path.join(dir, 'server-cert.pem')),
    readCred(path.join(dir, 'server-key.pem')),
    readCred(path.join(dir, 'ca-cert.pem')).catch((e: unknown) => {
      if (e instanceof BlockError && e.code === 'ENOENT' && options.verifyPeer !== true) return undefined;
      throw e;
    }),
  ]);
  return { mode, cert, key, ...(ca === undefined ? {} : { ca }), ...(options.verifyPeer === undefined ? {} : { verifyPeer: options.verifyPeer }) };
}

async function readCred(file: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const c = code === 'ENOENT' ? 'ENOENT' : code === 'EACCES' || code === 'EPERM' ? 'EACCES' : code === 'EISDIR' ? 'EISDIR' : 'EIO';
    throw new BlockError(c, `TLS credentials: cannot read ${file}: ${(e as Error).message}`, { path: file, cause: e });
  }
}

/** Checks the options and prepares the context once per server. Throws BlockError EINVAL. */
export function prepareTls(options: NbdTlsOptions): NbdTlsSetup {
  if (typeof options !== 'object' || options === null) throw new BlockError('EINVAL', 'tls: must be an object', { field: 'tls' });
  if (options.mode === 'x509') {
    if (!isPem(options.key) || !isPem(options.cert)) throw new BlockError('EINVAL', 'tls: x509 needs key and cert (PEM)', { field: 'tls' });
    const verifyPeer = options.verifyPeer === true;
    if (verifyPeer && options.ca === undefined) throw new BlockError('EINVAL', 'tls: verifyPeer needs a ca', { field: 'tls' });
    let secureContext: tls.SecureContext;
    try {
      secureContext = nodeTls().createSecureContext({
        key: options.key,
        cert: options.cert,
        ...(options.ca === undefined ? {} : { ca: options.ca }),
        minVersion: 'TLSv1.2',
      });
    } catch (e) {
      throw new BlockError('EINVAL', `tls: bad x509 credentials: ${(e as Error).message}`, { field: 'tls', cause: e });
    }
    return { verifyPeer, options: { isServer: true, secureContext, requestCert: verifyPeer, rejectUnauthorized: verifyPeer } };
  }
  if (options.mode === 'psk') {
    const ids = options.identities;
    if (typeof ids !== 'object' || ids === null) throw new BlockError('EINVAL', 'tls: psk needs identities', { field: 'tls' });
    const keys = new Map<string, Buffer>();
    for (const [id, key] of Object.entries(ids)) {
      if (!Buffer.isBuffer(key) || key.byteLength === 0) throw new BlockError('EINVAL', `tls: the key of identity '${id}' must be a non-empty Buffer`, { field: 'tls' });
      keys.set(id, key);
    }
    if (keys.size === 0) throw new BlockError('EINVAL', 'tls: psk needs at least one identity', { field: 'tls' });
    // PSK cipher suites for TLS 1.2 (GnuTLS clients such as QEMU offer them) and the TLS 1.3 suites.
    const secureContext = nodeTls().createSecureContext({ ciphers: 'PSK:ECDHEPSK:DHEPSK:!aNULL:!eNULL', minVersion: 'TLSv1.2' });
    return {
      verifyPeer: false,
      options: {
        isServer: true,
        secureContext,
        pskCallback: (_socket: tls.TLSSocket, identity: string) => keys.get(identity) ?? null,
      } as tls.TLSSocketOptions,
    };
  }
  throw new BlockError('EINVAL', `tls: unknown mode '${String((options as { mode?: unknown }).mode)}'`, { field: 'tls' });
}

/**
 * Why the client's certificate is refused, or null when it chains to the CA. A TLSSocket made outside a
 * tls.Server does not run Node's own check (which sets `authorized`), so this asks the TLS handle the
 * same question Node's server does; without that handle it refuses (fails closed).
 */
export function peerVerifyError(socket: tls.TLSSocket): string | null {
  if (socket.getPeerCertificate() === null || Object.keys(socket.getPeerCertificate()).length === 0) return 'no client certificate';
  const handle = (socket as unknown as { ssl?: { verifyError?: () => Error | null } }).ssl;
  if (typeof handle?.verifyError !== 'function') return 'cannot check the client certificate';
  const e = handle.verifyError();
  return e ? tlsErrorText(e) : null;
}

/** True for an error raised by TLS (OpenSSL) rather than by the socket under it. */
export function isTlsError(e: unknown): boolean {
  const err = e as (NodeJS.ErrnoException & { library?: unknown }) | null;
  if (err === null || typeof err !== 'object') return false;
  return typeof err.library === 'string' || (typeof err.code === 'string' && err.code.startsWith('ERR_SSL_')) || OPENSSL_LINE.test(String(err.message));
}

/** One line of OpenSSL's error queue: `<thread>:error:<hex>:<library>:<function>:<reason>:<file>:<line>:<data>`. */
const OPENSSL_LINE = /error:[0-9A-Fa-f]+:[^:\n]*:[^:\n]*:([^:\n]+):[^:\n]*:\d+:([^\n]*)/;

/**
 * A TLS error in one line, the reason first: OpenSSL's multi-line text
 * ("8030…:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/…c:350:\n")
 * becomes "wrong version number (ERR_SSL_WRONG_VERSION_NUMBER)"; other messages keep their first line.
 */
export function tlsErrorText(e: unknown): string {
  const err = (e ?? {}) as NodeJS.ErrnoException & { reason?: unknown };
  const message = e instanceof Error ? e.message : String(e);
  const m = OPENSSL_LINE.exec(message);
  const first = message.split('\n').find((l) => l.trim() !== '')?.trim() ?? 'unknown error';
  const reason = typeof err.reason === 'string' && err.reason !== '' ? err.reason : m ? (m[1] as string) : first;
  const notes: string[] = [];
  if (typeof err.code === 'string' && !reason.includes(err.code)) notes.push(err.code);
  const data = m?.[2]?.trim();
  if (data) notes.push(data);
  return notes.length > 0 ? `${reason} (${notes.join(', ')})` : reason;
}

function isPem(v: unknown): boolean {
  return (typeof v === 'string' && v.length > 0) || (Buffer.isBuffer(v) && v.byteLength > 0);
}

/** Client TLS with X.509 (QEMU's tls-creds-x509, endpoint=client): the server's certificate must chain to `ca`. */
export interface NbdClientTlsX509 {
  /** Certificates. */
  mode: 'x509';
  /** CA certificate(s) (PEM) that the server's certificate must chain to (default: Node's built-in root CAs). */
  ca?: string | Buffer | (string | Buffer)[];
  /** Client certificate (PEM), for servers that verify their peers. */
  cert?: string | Buffer;
  /** The client certificate's key (PEM). */
  key?: string | Buffer;
}

/** Client TLS with a pre-shared key (QEMU's tls-creds-psk, endpoint=client). */
export interface NbdClientTlsPsk {
  /** A pre-shared key. */
  mode: 'psk';
  /** The identity sent to the server (QEMU's default: qemu). */
  username: string;
  /** The key shared with the server. */
  key: Buffer;
}

/** TLS credentials of an NBD client. */
export type NbdClientTls = NbdClientTlsX509 | NbdClientTlsPsk;

/** QEMU's default PSK username (tls-creds-psk `username`). */
export const DEFAULT_PSK_USERNAME = 'qemu';

/**
 * Reads a client's credentials laid out as QEMU's tls-creds-x509 / tls-creds-psk `dir` with
 * endpoint=client (libnbd's tls-certificates reads the same): x509: ca-cert.pem, and
 * client-cert.pem with client-key.pem when both exist; psk: the key of `username` in keys.psk.
 */
export async function loadQemuTlsClientCredsDir(dir: string, mode: 'x509' | 'psk', options: { username?: string } = {}): Promise<NbdClientTls> {
  if (mode === 'psk') return pskIdentity(await loadPskFile(path.join(dir, 'keys.psk')), options.username, path.join(dir, 'keys.psk'));
  if (mode !== 'x509') throw new BlockError('EINVAL', `loadQemuTlsClientCredsDir: unknown mode '${String(mode)}'`, { field: 'mode' });
  const optional = (file: string) =>
    readCred(path.join(dir, file)).catch((e: unknown) => {
      if (e instanceof BlockError && e.code === 'ENOENT') return undefined;
      throw e;
    });
  const [ca, cert, key] = await Promise.all([readCred(path.join(dir, 'ca-cert.pem')), optional('client-cert.pem'), optional('client-key.pem')]);
  return { mode, ca, ...(cert !== undefined && key !== undefined ? { cert, key } : {}) };
}

/** The client's PSK from a keys.psk file (`identity:hexkey` lines): the line of `username` (default qemu). */
export async function loadClientPskFile(file: string, username?: string): Promise<NbdClientTlsPsk> {
  return pskIdentity(await loadPskFile(file), username, file);
}

function pskIdentity(keys: Record<string, Buffer>, username: string | undefined, file: string): NbdClientTlsPsk {
  const who = username ?? DEFAULT_PSK_USERNAME;
  const key = keys[who];
  if (key === undefined) throw new BlockError('ENOENT', `${file}: no key for username '${who}'`, { path: file, field: 'username' });
  return { mode: 'psk', username: who, key };
}

/**
 * Options for tls.connect over an NBD connection after NBD_OPT_STARTTLS. x509 checks the
 * server's certificate against the CAs and, when `hostname` is given, its name (QEMU's
 * tls-hostname; by default the inet host, none for a Unix socket). Throws BlockError EINVAL.
 */
export function clientTlsOptions(creds: NbdClientTls, socket: net.Socket, hostname: string | undefined): tls.ConnectionOptions {
  if (typeof creds !== 'object' || creds === null) throw new BlockError('EINVAL', 'tls: must be an object', { field: 'tls' });
  if (creds.mode === 'x509') {
    if ((creds.cert === undefined) !== (creds.key === undefined)) throw new BlockError('EINVAL', 'tls: a client certificate needs its key, and a key its certificate', { field: 'tls' });
    const isIp = hostname !== undefined && nodeNet().isIP(hostname) !== 0;
    return {
      socket,
      minVersion: 'TLSv1.2',
      rejectUnauthorized: true,
      ...(creds.ca === undefined ? {} : { ca: creds.ca }),
      ...(creds.cert === undefined ? {} : { cert: creds.cert, key: creds.key }),
      // SNI takes names only; the identity check takes names and addresses.
      ...(hostname !== undefined && !isIp ? { servername: hostname } : {}),
      ...(hostname !== undefined ? { host: hostname } : { checkServerIdentity: () => undefined }),
    };
  }
  if (creds.mode === 'psk') {
    if (typeof creds.username !== 'string' || creds.username === '' || Buffer.byteLength(creds.username) > MAX_IDENTITY) {
      throw new BlockError('EINVAL', `tls: the PSK username must be 1..${MAX_IDENTITY} bytes`, { field: 'tls' });
    }
    if (!Buffer.isBuffer(creds.key) || creds.key.byteLength === 0) throw new BlockError('EINVAL', 'tls: the PSK key must be a non-empty Buffer', { field: 'tls' });
    return {
      socket,
      minVersion: 'TLSv1.2',
      ciphers: 'PSK:ECDHEPSK:DHEPSK:!aNULL:!eNULL',
      pskCallback: () => ({ psk: creds.key, identity: creds.username }),
      // A PSK server has no certificate: knowing the key is what authenticates it.
      checkServerIdentity: () => undefined,
    };
  }
  throw new BlockError('EINVAL', `tls: unknown mode '${String((creds as { mode?: unknown }).mode)}'`, { field: 'tls' });
}
