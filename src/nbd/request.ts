import * as P from '../drivers/nbd/protocol.js';

const TWO_32 = 2 ** 32;
/** Offsets whose high word reaches this are past 2^53 - 1. */
const SAFE_HIGH_LIMIT = 2 ** 21;

/**
 * A request as the server keeps it while it is served. The cookie is only echoed back, so it stays
 * as its two 32-bit words (no BigInt per request); `cookie` builds the BigInt for the rare replies
 * encoded by the generic encoders (errors, block status).
 */
export class ServerRequest implements P.NbdRequest {
  constructor(
    readonly flags: number,
    readonly type: number,
    readonly cookieHigh: number,
    readonly cookieLow: number,
    readonly offset: number,
    readonly length: number,
    /** The offset as sent when it is past 2^53 (`offset` is then clamped to 2^53-1 so bounds checks refuse it). */
    readonly wideOffset: bigint | undefined = undefined,
  ) {}

  get cookie(): bigint {
    return (BigInt(this.cookieHigh) << 32n) | BigInt(this.cookieLow);
  }
}

/** Decodes the 28-byte request header at `at` in `b` (no copy, no view of it kept). */
export function decodeServerRequest(b: Buffer, at: number): ServerRequest {
  const magic = b.readUInt32BE(at);
  if (magic !== P.NBD_REQUEST_MAGIC) throw new P.NbdProtocolError(`request: bad magic 0x${magic.toString(16)}`);
  const high = b.readUInt32BE(at + 16);
  // Offsets past 2^53 cannot be a valid position in any export: clamp so bounds checks refuse them.
  const wide = high >= SAFE_HIGH_LIMIT;
  const offset = wide ? Number.MAX_SAFE_INTEGER : high * TWO_32 + b.readUInt32BE(at + 20);
  return new ServerRequest(
    b.readUInt16BE(at + 4),
    b.readUInt16BE(at + 6),
    b.readUInt32BE(at + 8),
    b.readUInt32BE(at + 12),
    offset,
    b.readUInt32BE(at + 24),
    wide ? b.readBigUInt64BE(at + 16) : undefined,
  );
}

/** A request's offset in a message, as the client sent it: every digit of an offset past 2^53, not the clamped value. */
export function offsetText(req: P.NbdRequest): string {
  return req instanceof ServerRequest && req.wideOffset !== undefined ? req.wideOffset.toString() : String(req.offset);
}

/** Bytes in front of READ data in its reply: a simple reply header, or an OFFSET_DATA chunk header with its offset. */
export function readReplyHeaderSize(structured: boolean): number {
  return structured ? P.STRUCTURED_REPLY_HEADER_SIZE + 8 : P.SIMPLE_REPLY_SIZE;
}

/** Writes the reply header of a successful READ of `req` into the first {@link readReplyHeaderSize} bytes of `b`. */
export function writeReadReplyHeader(b: Buffer, req: ServerRequest, structured: boolean): void {
  if (structured) {
    b.writeUInt32BE(P.NBD_STRUCTURED_REPLY_MAGIC, 0);
    b.writeUInt16BE(P.NBD_REPLY_FLAG_DONE, 4);
    b.writeUInt16BE(P.NBD_REPLY_TYPE_OFFSET_DATA, 6);
    b.writeUInt32BE(req.cookieHigh, 8);
    b.writeUInt32BE(req.cookieLow, 12);
    b.writeUInt32BE(8 + req.length, 16);
    b.writeUInt32BE(Math.floor(req.offset / TWO_32), 20);
    b.writeUInt32BE(req.offset % TWO_32, 24);
  } else {
    writeSimpleReply(b, req, P.NBD_SUCCESS);
  }
}

/** Writes a 16-byte simple reply (the whole reply of a command without data) into `b`. */
export function writeSimpleReply(b: Buffer, req: ServerRequest, error: number): void {
  b.writeUInt32BE(P.NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  b.writeUInt32BE(req.cookieHigh, 8);
  b.writeUInt32BE(req.cookieLow, 12);
}
