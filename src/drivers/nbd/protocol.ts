/**
 * The NBD wire format (NetworkBlockDevice/nbd doc/proto.md): constants and pure encode/decode
 * functions for the fixed-newstyle handshake, option haggling and the transmission phase.
 * Everything is big-endian. No I/O here: the server feeds these functions bytes it has read.
 */

import {
  CLIENT_FLAGS_SIZE,
  EXPORT_NAME_PADDING,
  NBD_CLISERV_MAGIC,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_INFO_BLOCK_SIZE,
  type NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  type NBD_INFO_NAME,
  NBD_INIT_MAGIC,
  NBD_MAX_STRING_SIZE,
  NBD_OPTS_MAGIC,
  NBD_REP_MAGIC,
  NBD_REP_FLAG_ERROR,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  NBD_STRUCTURED_REPLY_MAGIC,
  OPTION_HEADER_SIZE,
  OPTION_REPLY_HEADER_SIZE,
  REQUEST_SIZE,
  SERVER_GREETING_SIZE,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_REPLY_HEADER_SIZE,
} from './constants.js';

export * from './constants.js';

/** A decoding failure: the peer broke the protocol (the message says how). */
export class NbdProtocolError extends Error {
  override readonly name = 'NbdProtocolError';
}

/** Strict UTF-8: invalid bytes throw instead of becoming U+FFFD, and a leading BOM stays part of the text. */
const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Decodes a string a client sent (an export name, a query). The spec's strings are UTF-8: bytes
 * that are not are a protocol error, never replaced by U+FFFD (two byte strings must not name
 * one export).
 */
export function decodeUtf8(b: Uint8Array, what: string): string {
  try {
    return STRICT_UTF8.decode(b);
  } catch {
    throw new NbdProtocolError(`${what} is not valid UTF-8`);
  }
}

/** True for a string that UTF-8 can encode exactly (no lone surrogate, which would be sent as U+FFFD). */
export function isWellFormedUtf16(s: string): boolean {
  return !/\p{Cs}/u.test(s);
}

/** The fixed-newstyle greeting: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeServerGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.alloc(SERVER_GREETING_SIZE);
  b.writeBigUInt64BE(NBD_INIT_MAGIC, 0);
  b.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

/** The client's 32-bit flags after the greeting. */
export function decodeClientFlags(b: Uint8Array): number {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).readUInt32BE(0);
}

/** An option's header: which option and how many data bytes follow. */
export interface OptionHeader {
  option: number;
  length: number;
}

/** Decodes a 16-byte option header; a wrong magic is a protocol error. */
export function decodeOptionHeader(b: Uint8Array): OptionHeader {
  const v = view(b);
  if (b.byteLength < OPTION_HEADER_SIZE) throw new NbdProtocolError(`option header: ${b.byteLength} bytes, need ${OPTION_HEADER_SIZE}`);
  const magic = v.getBigUint64(0);
  if (magic !== NBD_OPTS_MAGIC) throw new NbdProtocolError(`option header: bad magic 0x${magic.toString(16)}`);
  return { option: v.getUint32(8), length: v.getUint32(12) };
}

/** Encodes an option header (for tests and a future client). */
export function encodeOptionHeader(option: number, length: number): Buffer {
  const b = Buffer.alloc(OPTION_HEADER_SIZE);
  b.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(length, 12);
  return b;
}

/** An option reply: header plus data, one buffer. */
export function encodeOptionReply(option: number, type: number, data: Uint8Array = EMPTY): Buffer {
  const b = Buffer.alloc(OPTION_REPLY_HEADER_SIZE + data.byteLength);
  b.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.byteLength, 16);
  b.set(data, OPTION_REPLY_HEADER_SIZE);
  return b;
}

/** Decoded option reply header (for tests and a future client). */
export interface OptionReplyHeader {
  option: number;
  type: number;
  length: number;
}

export function decodeOptionReplyHeader(b: Uint8Array): OptionReplyHeader {
  const v = view(b);
  if (b.byteLength < OPTION_REPLY_HEADER_SIZE) throw new NbdProtocolError(`option reply: ${b.byteLength} bytes, need ${OPTION_REPLY_HEADER_SIZE}`);
  const magic = v.getBigUint64(0);
  if (magic !== NBD_REP_MAGIC) throw new NbdProtocolError(`option reply: bad magic 0x${magic.toString(16)}`);
  return { option: v.getUint32(8), type: v.getUint32(12), length: v.getUint32(16) };
}

/** The NBD_OPT_EXPORT_NAME reply: size, transmission flags, and 124 zeros unless NO_ZEROES was agreed. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_PADDING));
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

/** NBD_INFO_EXPORT: size and transmission flags. */
export function encodeInfoExport(size: number, transmissionFlags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(NBD_INFO_EXPORT, 0);
  b.writeBigUInt64BE(BigInt(size), 2);
  b.writeUInt16BE(transmissionFlags, 10);
  return b;
}

/** NBD_INFO_NAME or NBD_INFO_DESCRIPTION: the type and the UTF-8 text (no length field). */
export function encodeInfoString(type: typeof NBD_INFO_NAME | typeof NBD_INFO_DESCRIPTION, text: string): Buffer {
  const s = Buffer.from(text, 'utf8');
  const b = Buffer.alloc(2 + s.byteLength);
  b.writeUInt16BE(type, 0);
  b.set(s, 2);
  return b;
}

/** NBD_INFO_BLOCK_SIZE: minimum, preferred and maximum block sizes. */
export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(minimum, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(maximum, 10);
  return b;
}

/** NBD_REP_SERVER data for NBD_OPT_LIST: name length, name, then the description. */
export function encodeServerEntry(name: string, description = ''): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const b = Buffer.alloc(4 + n.byteLength + d.byteLength);
  b.writeUInt32BE(n.byteLength, 0);
  b.set(n, 4);
  b.set(d, 4 + n.byteLength);
  return b;
}

/** NBD_REP_META_CONTEXT data: the context id and its name. */
export function encodeMetaContext(id: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.byteLength);
  b.writeUInt32BE(id, 0);
  b.set(n, 4);
  return b;
}

/** Data of NBD_OPT_INFO / NBD_OPT_GO: the export name and the info types asked for. */
export interface InfoRequest {
  name: string;
  requests: number[];
}

/** Decodes NBD_OPT_INFO / NBD_OPT_GO data; a length that does not add up is a protocol error. */
export function decodeInfoRequest(b: Uint8Array): InfoRequest {
  const r = new FieldReader(b, 'info request');
  const name = r.string(r.u32(), 'name', true);
  const count = r.u16();
  const requests: number[] = [];
  for (let i = 0; i < count; i++) requests.push(r.u16());
  r.end();
  return { name, requests };
}

/** Encodes NBD_OPT_INFO / NBD_OPT_GO data (for tests and a future client). */
export function encodeInfoRequest(name: string, requests: readonly number[] = []): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.byteLength + 2 + 2 * requests.length);
  b.writeUInt32BE(n.byteLength, 0);
  b.set(n, 4);
  b.writeUInt16BE(requests.length, 4 + n.byteLength);
  for (const [i, t] of requests.entries()) b.writeUInt16BE(t, 6 + n.byteLength + 2 * i);
  return b;
}

/** Data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT: export name and queries. */
export interface MetaContextRequest {
  exportName: string;
  queries: string[];
}

export function decodeMetaContextRequest(b: Uint8Array): MetaContextRequest {
  const r = new FieldReader(b, 'meta context request');
  const exportName = r.string(r.u32(), 'export name', true);
  const count = r.u32();
  const queries: string[] = [];
  for (let i = 0; i < count; i++) queries.push(r.string(r.u32(), 'query', true));
  r.end();
  return { exportName, queries };
}

export function encodeMetaContextRequest(exportName: string, queries: readonly string[]): Buffer {
  const parts = [u32(Buffer.byteLength(exportName)), Buffer.from(exportName), u32(queries.length)];
  for (const q of queries) parts.push(u32(Buffer.byteLength(q)), Buffer.from(q));
  return Buffer.concat(parts);
}

/** A transmission request header (the WRITE payload, if any, follows it). */
export interface NbdRequest {
  flags: number;
  type: number;
  /** Opaque handle echoed in the reply (the spec's "cookie"). */
  cookie: bigint;
  offset: number;
  length: number;
}

/** Decodes a 28-byte request; a wrong magic or an offset beyond 2^53 is a protocol error. */
export function decodeRequest(b: Uint8Array): NbdRequest {
  if (b.byteLength < REQUEST_SIZE) throw new NbdProtocolError(`request: ${b.byteLength} bytes, need ${REQUEST_SIZE}`);
  const v = view(b);
  const magic = v.getUint32(0);
  if (magic !== NBD_REQUEST_MAGIC) throw new NbdProtocolError(`request: bad magic 0x${magic.toString(16)}`);
  const offset = v.getBigUint64(16);
  return {
    flags: v.getUint16(4),
    type: v.getUint16(6),
    cookie: v.getBigUint64(8),
    // Offsets past 2^53 cannot be a valid position in any export: clamp so bounds checks refuse them.
    offset: offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(offset),
    length: v.getUint32(24),
  };
}

export function encodeRequest(r: NbdRequest): Buffer {
  const b = Buffer.alloc(REQUEST_SIZE);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(r.flags, 4);
  b.writeUInt16BE(r.type, 6);
  b.writeBigUInt64BE(r.cookie, 8);
  b.writeBigUInt64BE(BigInt(r.offset), 16);
  b.writeUInt32BE(r.length, 24);
  return b;
}

/** A simple reply header (read data, if any, follows it). */
export function encodeSimpleReply(cookie: bigint, error: number): Buffer {
  const b = Buffer.alloc(SIMPLE_REPLY_SIZE);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  b.writeBigUInt64BE(cookie, 8);
  return b;
}

export interface SimpleReply {
  error: number;
  cookie: bigint;
}

export function decodeSimpleReply(b: Uint8Array): SimpleReply {
  const v = view(b);
  const magic = v.getUint32(0);
  if (magic !== NBD_SIMPLE_REPLY_MAGIC) throw new NbdProtocolError(`simple reply: bad magic 0x${magic.toString(16)}`);
  return { error: v.getUint32(4), cookie: v.getBigUint64(8) };
}

/** A structured reply chunk header; `length` bytes of chunk payload follow. */
export function encodeStructuredReplyHeader(cookie: bigint, flags: number, type: number, length: number): Buffer {
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_SIZE);
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeUInt32BE(length, 16);
  return b;
}

export interface StructuredReplyHeader {
  flags: number;
  type: number;
  cookie: bigint;
  length: number;
}

export function decodeStructuredReplyHeader(b: Uint8Array): StructuredReplyHeader {
  const v = view(b);
  const magic = v.getUint32(0);
  if (magic !== NBD_STRUCTURED_REPLY_MAGIC) throw new NbdProtocolError(`structured reply: bad magic 0x${magic.toString(16)}`);
  return { flags: v.getUint16(4), type: v.getUint16(6), cookie: v.getBigUint64(8), length: v.getUint32(16) };
}

/** An NBD_REPLY_TYPE_OFFSET_DATA chunk header plus its 8-byte offset (the data follows). */
export function encodeOffsetDataHeader(cookie: bigint, flags: number, offset: number, dataLength: number): Buffer {
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_SIZE + 8);
  encodeStructuredReplyHeader(cookie, flags, NBD_REPLY_TYPE_OFFSET_DATA, 8 + dataLength).copy(b, 0);
  b.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_SIZE);
  return b;
}

/** An NBD_REPLY_TYPE_OFFSET_HOLE chunk: offset and length of a range that reads as zeros. */
export function encodeOffsetHole(cookie: bigint, flags: number, offset: number, length: number): Buffer {
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_SIZE + 12);
  encodeStructuredReplyHeader(cookie, flags, NBD_REPLY_TYPE_OFFSET_HOLE, 12).copy(b, 0);
  b.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_SIZE);
  b.writeUInt32BE(length, STRUCTURED_REPLY_HEADER_SIZE + 8);
  return b;
}

/** An NBD_REPLY_TYPE_ERROR chunk (or ERROR_OFFSET when `offset` is given), with a message. */
export function encodeErrorChunk(cookie: bigint, flags: number, error: number, message: string, offset?: number): Buffer {
  let m = Buffer.from(message, 'utf8');
  if (m.byteLength > NBD_MAX_STRING_SIZE) m = m.subarray(0, NBD_MAX_STRING_SIZE);
  const payload = 6 + m.byteLength + (offset === undefined ? 0 : 8);
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_SIZE + payload);
  const type = offset === undefined ? NBD_REPLY_TYPE_ERROR : NBD_REPLY_TYPE_ERROR_OFFSET;
  encodeStructuredReplyHeader(cookie, flags, type, payload).copy(b, 0);
  b.writeUInt32BE(error, STRUCTURED_REPLY_HEADER_SIZE);
  b.writeUInt16BE(m.byteLength, STRUCTURED_REPLY_HEADER_SIZE + 4);
  b.set(m, STRUCTURED_REPLY_HEADER_SIZE + 6);
  if (offset !== undefined) b.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_SIZE + 6 + m.byteLength);
  return b;
}

/** One block status descriptor: a length and its status flags. */
export interface Extent {
  length: number;
  flags: number;
}

/** An NBD_REPLY_TYPE_BLOCK_STATUS chunk: the context id and the descriptors. */
export function encodeBlockStatusChunk(cookie: bigint, flags: number, contextId: number, extents: readonly Extent[]): Buffer {
  const payload = 4 + 8 * extents.length;
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_SIZE + payload);
  encodeStructuredReplyHeader(cookie, flags, NBD_REPLY_TYPE_BLOCK_STATUS, payload).copy(b, 0);
  b.writeUInt32BE(contextId, STRUCTURED_REPLY_HEADER_SIZE);
  for (const [i, e] of extents.entries()) {
    b.writeUInt32BE(e.length, STRUCTURED_REPLY_HEADER_SIZE + 4 + 8 * i);
    b.writeUInt32BE(e.flags, STRUCTURED_REPLY_HEADER_SIZE + 8 + 8 * i);
  }
  return b;
}

/** base:allocation flags of an extent: HOLE where nothing is allocated (no data), ZERO where it reads as zeros. */
export function allocationFlags(status: { data: boolean; zero: boolean }): number {
  return (status.data ? 0 : NBD_STATE_HOLE) | (status.zero ? NBD_STATE_ZERO : 0);
}

const EMPTY = new Uint8Array(0);

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

/** Reads fields of an option's data in order; running past the end is a protocol error. */
class FieldReader {
  private pos = 0;
  private readonly v: DataView;
  constructor(
    private readonly b: Uint8Array,
    private readonly what: string,
  ) {
    this.v = view(b);
  }
  private need(n: number, field: string): void {
    if (this.pos + n > this.b.byteLength) throw new NbdProtocolError(`${this.what}: ${field} runs past the end of the option data`);
  }
  u16(): number {
    this.need(2, 'u16 field');
    const x = this.v.getUint16(this.pos);
    this.pos += 2;
    return x;
  }
  u32(): number {
    this.need(4, 'u32 field');
    const x = this.v.getUint32(this.pos);
    this.pos += 4;
    return x;
  }
  /** `strict`: invalid UTF-8 is a protocol error (names a client sends); else it is decoded lossily (messages a server sends). */
  string(length: number, field: string, strict = false): string {
    if (length > NBD_MAX_STRING_SIZE) throw new NbdProtocolError(`${this.what}: ${field} of ${length} bytes exceeds ${NBD_MAX_STRING_SIZE}`);
    this.need(length, field);
    const bytes = Buffer.from(this.b.buffer, this.b.byteOffset + this.pos, length);
    const s = strict ? decodeUtf8(bytes, `${this.what}: ${field}`) : bytes.toString('utf8');
    this.pos += length;
    return s;
  }
  end(): void {
    if (this.pos !== this.b.byteLength) throw new NbdProtocolError(`${this.what}: ${this.b.byteLength - this.pos} trailing bytes`);
  }
}

// ---- Client side: decoding what a server sends, encoding what a client sends. ----

/** Decodes the 18-byte fixed-newstyle greeting; returns the handshake flags. Oldstyle or bad magic is a protocol error. */
export function decodeServerGreeting(b: Uint8Array): number {
  if (b.byteLength < SERVER_GREETING_SIZE) throw new NbdProtocolError(`greeting: ${b.byteLength} bytes, need ${SERVER_GREETING_SIZE}`);
  const v = view(b);
  const init = v.getBigUint64(0);
  if (init !== NBD_INIT_MAGIC) throw new NbdProtocolError(`greeting: bad magic 0x${init.toString(16)} (not an NBD server)`);
  const opts = v.getBigUint64(8);
  if (opts === NBD_CLISERV_MAGIC) throw new NbdProtocolError('greeting: the server speaks oldstyle negotiation, which is not supported');
  if (opts !== NBD_OPTS_MAGIC) throw new NbdProtocolError(`greeting: bad option magic 0x${opts.toString(16)}`);
  const flags = v.getUint16(16);
  if (!(flags & NBD_FLAG_FIXED_NEWSTYLE)) throw new NbdProtocolError('greeting: the server does not offer fixed newstyle negotiation');
  return flags;
}

/** The client's 32-bit flags sent after the greeting. */
export function encodeClientFlags(flags: number): Buffer {
  const b = Buffer.alloc(CLIENT_FLAGS_SIZE);
  b.writeUInt32BE(flags >>> 0, 0);
  return b;
}

/** An option request: header and data in one buffer. */
export function encodeOption(option: number, data: Uint8Array = EMPTY): Buffer {
  const b = Buffer.alloc(OPTION_HEADER_SIZE + data.byteLength);
  encodeOptionHeader(option, data.byteLength).copy(b, 0);
  b.set(data, OPTION_HEADER_SIZE);
  return b;
}

/** True for an option reply type that reports an error (bit 31 set). */
export function isOptionReplyError(type: number): boolean {
  return (type & NBD_REP_FLAG_ERROR) !== 0;
}

/** One NBD_REP_INFO payload, decoded (unknown info types are kept as `other`). */
export type InfoReply =
  | { type: 'export'; size: number; transmissionFlags: number }
  | { type: 'block-size'; minimum: number; preferred: number; maximum: number }
  | { type: 'other'; info: number };

/** Decodes NBD_REP_INFO data; a wrong length or an export size beyond 2^53 is a protocol error. */
export function decodeInfoReply(b: Uint8Array): InfoReply {
  if (b.byteLength < 2) throw new NbdProtocolError(`info reply: ${b.byteLength} bytes, need at least 2`);
  const v = view(b);
  const info = v.getUint16(0);
  if (info === NBD_INFO_EXPORT) {
    if (b.byteLength !== 12) throw new NbdProtocolError(`NBD_INFO_EXPORT: ${b.byteLength} bytes, need 12`);
    const size = v.getBigUint64(2);
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdProtocolError(`NBD_INFO_EXPORT: export size ${size} exceeds 2^53`);
    return { type: 'export', size: Number(size), transmissionFlags: v.getUint16(10) };
  }
  if (info === NBD_INFO_BLOCK_SIZE) {
    if (b.byteLength !== 14) throw new NbdProtocolError(`NBD_INFO_BLOCK_SIZE: ${b.byteLength} bytes, need 14`);
    const minimum = v.getUint32(2);
    const preferred = v.getUint32(6);
    const maximum = v.getUint32(10);
    if (minimum === 0 || (minimum & (minimum - 1)) !== 0 || minimum > 65536) {
      throw new NbdProtocolError(`NBD_INFO_BLOCK_SIZE: minimum ${minimum} is not a power of two up to 64 KiB`);
    }
    if (maximum < minimum) throw new NbdProtocolError(`NBD_INFO_BLOCK_SIZE: maximum ${maximum} below minimum ${minimum}`);
    return { type: 'block-size', minimum, preferred, maximum };
  }
  return { type: 'other', info };
}

/** NBD_REP_META_CONTEXT data: the context id and its name. */
export function decodeMetaContext(b: Uint8Array): { id: number; name: string } {
  if (b.byteLength < 4) throw new NbdProtocolError(`meta context reply: ${b.byteLength} bytes, need at least 4`);
  const r = new FieldReader(b, 'meta context reply');
  const id = r.u32();
  const name = r.string(b.byteLength - 4, 'name');
  return { id, name };
}

/** Which kind of transmission reply a 4-byte magic starts; anything else is a protocol error. */
export function replyKind(b: Uint8Array): 'simple' | 'structured' {
  if (b.byteLength < 4) throw new NbdProtocolError(`reply: ${b.byteLength} bytes, need 4`);
  const magic = view(b).getUint32(0);
  if (magic === NBD_SIMPLE_REPLY_MAGIC) return 'simple';
  if (magic === NBD_STRUCTURED_REPLY_MAGIC) return 'structured';
  throw new NbdProtocolError(`reply: bad magic 0x${magic.toString(16)}`);
}

/** The offset at the start of an NBD_REPLY_TYPE_OFFSET_DATA payload (the data follows it). */
export function decodeOffsetDataOffset(payload: Uint8Array): number {
  if (payload.byteLength < 9) throw new NbdProtocolError(`OFFSET_DATA chunk: ${payload.byteLength} bytes, need at least 9`);
  return safeOffset(view(payload).getBigUint64(0), 'OFFSET_DATA chunk');
}

/** An NBD_REPLY_TYPE_OFFSET_HOLE payload: offset and length of a range that reads as zeros. */
export function decodeOffsetHole(payload: Uint8Array): { offset: number; length: number } {
  if (payload.byteLength !== 12) throw new NbdProtocolError(`OFFSET_HOLE chunk: ${payload.byteLength} bytes, need 12`);
  const v = view(payload);
  const length = v.getUint32(8);
  if (length === 0) throw new NbdProtocolError('OFFSET_HOLE chunk: zero length');
  return { offset: safeOffset(v.getBigUint64(0), 'OFFSET_HOLE chunk'), length };
}

/** An NBD_REPLY_TYPE_ERROR / ERROR_OFFSET payload: the error value, the message and (ERROR_OFFSET) the offset. */
export function decodeErrorChunk(type: number, payload: Uint8Array): { error: number; message: string; offset?: number } {
  const r = new FieldReader(payload, 'error chunk');
  const error = r.u32();
  const message = r.string(r.u16(), 'message');
  if (type !== NBD_REPLY_TYPE_ERROR_OFFSET) return { error, message };
  const hi = r.u32();
  const lo = r.u32();
  return { error, message, offset: safeOffset((BigInt(hi) << 32n) | BigInt(lo), 'error chunk') };
}

/** An NBD_REPLY_TYPE_BLOCK_STATUS payload: the context id and its descriptors. */
export function decodeBlockStatusChunk(payload: Uint8Array): { contextId: number; extents: Extent[] } {
  if (payload.byteLength < 12 || (payload.byteLength - 4) % 8 !== 0) {
    throw new NbdProtocolError(`BLOCK_STATUS chunk: ${payload.byteLength} bytes, need 4 + 8n (n >= 1)`);
  }
  const v = view(payload);
  const extents: Extent[] = [];
  for (let p = 4; p < payload.byteLength; p += 8) extents.push({ length: v.getUint32(p), flags: v.getUint32(p + 4) });
  return { contextId: v.getUint32(0), extents };
}

/** base:allocation flags back to what they say: HOLE → no data, ZERO → reads as zeros. */
export function allocationStatus(flags: number): { data: boolean; zero: boolean } {
  return { data: (flags & NBD_STATE_HOLE) === 0, zero: (flags & NBD_STATE_ZERO) !== 0 };
}

function safeOffset(x: bigint, what: string): number {
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdProtocolError(`${what}: offset ${x} exceeds 2^53`);
  return Number(x);
}
