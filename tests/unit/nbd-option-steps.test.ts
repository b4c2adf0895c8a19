import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import type { Drive } from '../../src/drive.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import { ReaderClosed, type ReadWaiter, SocketReader } from '../../src/drivers/nbd/reader.js';
import type { NbdExport } from '../../src/nbd/export.js';
import { HandshakeReplies } from '../../src/nbd/handshake-replies.js';
import { Negotiation, type NegotiationHost } from '../../src/nbd/negotiation.js';
import { HANDSHAKE_BACKLOG, stepOptions } from '../../src/nbd/option-steps.js';
import { ProtocolViolation } from '../../src/nbd/protocol-violation.js';

/** Just what the reader and the option steps use of a socket: its events, pause/resume and the writes made. */
class FakeSocket extends EventEmitter {
  paused = false;
  destroyed = false;
  writable = true;
  writableLength = 0;
  readonly writes: Buffer[] = [];
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    return this;
  }
  isPaused(): boolean {
    return this.paused;
  }
  write(b: Uint8Array): boolean {
    this.writes.push(Buffer.from(b));
    return true;
  }
}

function setup() {
  const drive = { length: 1 << 20, readOnly: false } as unknown as Drive;
  const exp: NbdExport = { name: '', drive, readOnly: false };
  const host: NegotiationHost = { findExport: (n) => (n === '' ? exp : undefined), allExports: () => [exp], tlsAvailable: false, tlsRequired: false, maxRequest: 32 << 20, maxConnections: 16 };
  const socket = new FakeSocket();
  const reader = new SocketReader(socket as unknown as Socket, 1 << 20);
  const pending = new HandshakeReplies();
  const neg = new Negotiation(host, (f) => pending.push(f));
  const calls: string[] = [];
  const w: ReadWaiter = { resolve: () => calls.push('resolve'), reject: (e) => calls.push(`reject ${e.message}`) };
  const step = () => stepOptions(neg, reader, pending, socket as unknown as Socket, false, w);
  return { socket, reader, neg, calls, step, exp };
}

const flags = P.encodeClientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES);
const structured = P.encodeOption(P.NBD_OPT_STRUCTURED_REPLY);
const go = P.encodeOption(P.NBD_OPT_GO, P.encodeInfoRequest('', [P.NBD_INFO_BLOCK_SIZE]));

/** Option reply types in the bytes written, in order. */
function replyTypes(writes: Buffer[]): number[] {
  const all = Buffer.concat(writes);
  const types: number[] = [];
  for (let at = 0; at < all.byteLength; ) {
    const h = P.decodeOptionReplyHeader(all.subarray(at));
    types.push(h.type);
    at += P.OPTION_REPLY_HEADER_SIZE + h.length;
  }
  return types;
}

describe('the option haggling stepped over the bytes received (no promise per option)', () => {
  it('takes options sent together in one go and writes their replies in one write, selecting the export', () => {
    const t = setup();
    t.socket.emit('data', Buffer.concat([flags, structured, go]));
    expect(t.step()).toBe('selected');
    expect(t.neg.selected).toBe(t.exp);
    expect(t.neg.structured).toBe(true);
    expect(t.socket.writes).toHaveLength(1);
    expect(replyTypes(t.socket.writes)).toEqual([P.NBD_REP_ACK, P.NBD_REP_INFO, P.NBD_REP_INFO, P.NBD_REP_ACK]);
    expect(t.calls).toEqual([]);
  });

  it('waits for the reader when the bytes are not all here, replies so far written first, and goes on when called back', () => {
    const t = setup();
    const bytes = Buffer.concat([flags, structured, go]);
    const cut = flags.byteLength + structured.byteLength + 5;
    t.socket.emit('data', bytes.subarray(0, cut));
    expect(t.step()).toBeNull();
    // STRUCTURED_REPLY's ACK left before the wait: a client that waits for it is not stuck.
    expect(replyTypes(t.socket.writes)).toEqual([P.NBD_REP_ACK]);
    expect(t.calls).toEqual([]);
    t.socket.emit('data', bytes.subarray(cut, cut + 3));
    expect(t.calls).toEqual([]);
    t.socket.emit('data', bytes.subarray(cut + 3));
    expect(t.calls).toEqual(['resolve']);
    expect(t.step()).toBe('selected');
    expect(replyTypes(t.socket.writes)).toEqual([P.NBD_REP_ACK, P.NBD_REP_INFO, P.NBD_REP_INFO, P.NBD_REP_ACK]);
  });

  it("calls the waiter's reject when the reader ends during a wait, and throws the reason when stepped after", () => {
    const t = setup();
    t.socket.emit('data', flags);
    expect(t.step()).toBeNull();
    t.socket.emit('end');
    expect(t.calls).toEqual(['reject peer closed the connection']);
    expect(() => t.step()).toThrow(ReaderClosed);
  });

  it('stops at a backlog of unread replies before the next option, and goes on once it has drained', () => {
    const t = setup();
    t.socket.emit('data', Buffer.concat([flags, structured, go]));
    t.socket.writableLength = HANDSHAKE_BACKLOG + 1;
    // The client flags are no option: the backlog is looked at before each option header.
    expect(t.step()).toBe('backlog');
    t.socket.writableLength = 0;
    expect(t.step()).toBe('selected');
  });

  it('throws the protocol violation of a client that breaks the protocol', () => {
    const t = setup();
    t.socket.emit('data', P.encodeClientFlags(0));
    expect(() => t.step()).toThrow(ProtocolViolation);
  });

  it('reports an abort to the connection, its ACK written', () => {
    const t = setup();
    t.socket.emit('data', Buffer.concat([flags, P.encodeOption(P.NBD_OPT_ABORT)]));
    expect(t.step()).toBe('abort');
    expect(replyTypes(t.socket.writes)).toEqual([P.NBD_REP_ACK]);
  });
});

describe('SocketReader.whenBuffered', () => {
  it('is true at once when the bytes are here, calls back once they arrive, and throws once the reader has ended', () => {
    const socket = new FakeSocket();
    const reader = new SocketReader(socket as unknown as Socket, 64);
    const calls: string[] = [];
    const w: ReadWaiter = { resolve: () => calls.push('resolve'), reject: (e) => calls.push(`reject ${e.message}`) };
    socket.emit('data', Buffer.alloc(10));
    expect(reader.whenBuffered(10, w)).toBe(true);
    expect(reader.whenBuffered(11, w)).toBe(false);
    socket.emit('data', Buffer.alloc(0));
    expect(calls).toEqual([]);
    socket.emit('data', Buffer.alloc(1));
    expect(calls).toEqual(['resolve']);
    expect(reader.readNow(11)?.byteLength).toBe(11);
    expect(reader.whenBuffered(1, w)).toBe(false);
    reader.stop(new ReaderClosed('stopped'));
    expect(calls).toEqual(['resolve', 'reject stopped']);
    expect(() => reader.whenBuffered(1, w)).toThrow('stopped');
  });

  it('resumes a paused socket when the wait needs more than it holds', () => {
    const socket = new FakeSocket();
    const reader = new SocketReader(socket as unknown as Socket, 4);
    socket.emit('data', Buffer.alloc(8));
    expect(socket.isPaused()).toBe(true);
    expect(reader.whenBuffered(16, { resolve: () => {}, reject: () => {} })).toBe(false);
    expect(socket.isPaused()).toBe(false);
  });
});
