// Handing a connection to another thread after its handshake (an export served in an iothread).
// Node cannot transfer a net.Socket to a worker, but a file descriptor is process-wide: the
// descriptor is duplicated, the bytes already read past the handshake go with it, and the
// thread that accepted it lets its own socket go.
import type net from 'node:net';
import type { SocketReader } from '../drivers/nbd/reader.js';
import { loadKoffi } from '../platform/koffi-load.js';
import { BlockError } from '../errors.js';
import { type ExportContexts, MetaSelection } from './meta-contexts.js';

/** What the handshake agreed on, and the connection itself: what another thread needs to go on with transmission. */
export interface HandedConnection {
  /** A duplicate of the socket's descriptor, owned by whoever receives this. */
  fd: number;
  /** Bytes received past the handshake (requests already sent), to be read first. */
  head: Uint8Array;
  exportName: string;
  structured: boolean;
  /** base:allocation / qemu:allocation-depth selected by SET_META_CONTEXT. */
  allocation: boolean;
  depth: boolean;
  address: string;
  port?: number;
}

/** Where a connection to an export goes after its handshake; the export's data path runs there. */
export type HandOver = (c: HandedConnection) => void;

let dupCall: ((fd: number) => number) | undefined;

/** dup(2): Node has no binding for it. */
function dup(fd: number): number {
  if (dupCall === undefined) {
    const koffi = loadKoffi();
    dupCall = koffi.load('libc.so.6').func('int dup(int fd)') as (fd: number) => number;
  }
  const copy = dupCall(fd);
  if (copy < 0) throw new BlockError('EIO', `handover: dup(${fd}) failed (errno ${loadKoffi().errno()})`);
  return copy;
}

/** The socket's descriptor (TCP or Unix), or an error for one that has none (a TLS socket, a closed one). */
function descriptorOf(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new BlockError('ENOTSUP', 'handover: the connection has no descriptor of its own (TLS, or closed)');
  return fd;
}

/**
 * Takes a connection out of this thread: its replies so far are written, reading stops, the
 * bytes received and not parsed are collected, the descriptor is duplicated, and the socket is
 * destroyed (which closes only this thread's descriptor). Synchronous from the pause on, so no
 * byte arrives in between.
 */
export async function takeConnection(socket: net.Socket, reader: SocketReader, agreed: Omit<HandedConnection, 'fd' | 'head'>, reason: (why: string) => void): Promise<HandedConnection> {
  socket.uncork();
  while (socket.writableLength > 0 && !socket.destroyed) await new Promise<void>((resolve) => socket.once('drain', resolve));
  if (socket.destroyed) throw new BlockError('EIO', 'handover: the client left during the handshake');
  socket.pause();
  const parts: Buffer[] = [reader.detach()];
  for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) parts.push(chunk);
  const fd = dup(descriptorOf(socket));
  reason('handed to its iothread');
  socket.destroy();
  return { ...agreed, fd, head: Buffer.concat(parts) };
}

/** What a connection's handshake agreed on, as it travels with the connection. */
export function agreedOf(info: { address: string; port?: number; export: string | null }, structured: boolean, meta: MetaSelection | null): Omit<HandedConnection, 'fd' | 'head'> {
  const { address, port } = info;
  return { address, ...(port === undefined ? {} : { port }), exportName: info.export ?? '', structured, allocation: meta?.allocation === true, depth: meta?.depth === true };
}

/** The meta contexts a handed connection had selected, for the export as the receiving thread serves it. */
export function agreedSelection(e: { readonly name: string }, contexts: ExportContexts, c: HandedConnection): MetaSelection | null {
  if (!c.allocation && !c.depth) return null;
  const meta = new MetaSelection(e.name, contexts);
  meta.allocation = c.allocation;
  meta.depth = c.depth && contexts.allocationDepth;
  return meta;
}
