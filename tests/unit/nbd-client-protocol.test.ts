import { describe, expect, it } from 'vitest';
import { blockCodeForNbdError, nbdErrorFor } from '../../src/drivers/nbd/errors.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import { BlockError, codeForErrno } from '../../src/errors.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('NBD client-side encoders and decoders', () => {
  it('the greeting the server encodes decodes to its handshake flags', () => {
    const flags = P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES;
    expect(P.decodeServerGreeting(P.encodeServerGreeting(flags))).toBe(flags);
  });

  it('a greeting with a bad magic, oldstyle negotiation, or no fixed newstyle is a protocol error', () => {
    const bad = P.encodeServerGreeting(P.NBD_FLAG_FIXED_NEWSTYLE);
    bad[0] = 0;
    expect(() => P.decodeServerGreeting(bad)).toThrow(/bad magic/);
    const old = P.encodeServerGreeting(P.NBD_FLAG_FIXED_NEWSTYLE);
    old.writeBigUInt64BE(P.NBD_CLISERV_MAGIC, 8);
    expect(() => P.decodeServerGreeting(old)).toThrow(/oldstyle/);
    expect(() => P.decodeServerGreeting(P.encodeServerGreeting(0))).toThrow(/fixed newstyle/);
    expect(() => P.decodeServerGreeting(new Uint8Array(10))).toThrow(P.NbdProtocolError);
  });

  it('client flags are 32 bits big-endian and decode back', () => {
    const b = P.encodeClientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES);
    expect(hex(b)).toBe('00000003');
    expect(P.decodeClientFlags(b)).toBe(3);
  });

  it('an option request is its header followed by its data', () => {
    const data = P.encodeInfoRequest('disk', [P.NBD_INFO_BLOCK_SIZE]);
    const b = P.encodeOption(P.NBD_OPT_GO, data);
    expect(P.decodeOptionHeader(b)).toEqual({ option: P.NBD_OPT_GO, length: data.byteLength });
    expect(P.decodeInfoRequest(b.subarray(P.OPTION_HEADER_SIZE))).toEqual({ name: 'disk', requests: [P.NBD_INFO_BLOCK_SIZE] });
    expect(P.encodeOption(P.NBD_OPT_STRUCTURED_REPLY).byteLength).toBe(P.OPTION_HEADER_SIZE);
  });

  it('option reply error types are those with bit 31 set', () => {
    expect(P.isOptionReplyError(P.NBD_REP_ACK)).toBe(false);
    expect(P.isOptionReplyError(P.NBD_REP_INFO)).toBe(false);
    expect(P.isOptionReplyError(P.NBD_REP_ERR_UNKNOWN)).toBe(true);
    expect(P.isOptionReplyError(P.NBD_REP_ERR_UNSUP)).toBe(true);
  });

  it('NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE decode what the server encodes; other infos are kept as other', () => {
    expect(P.decodeInfoReply(P.encodeInfoExport(1 << 30, P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_READ_ONLY))).toEqual({
      type: 'export',
      size: 1 << 30,
      transmissionFlags: P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_READ_ONLY,
    });
    expect(P.decodeInfoReply(P.encodeInfoBlockSize(512, 4096, 32 << 20))).toEqual({
      type: 'block-size',
      minimum: 512,
      preferred: 4096,
      maximum: 32 << 20,
    });
    expect(P.decodeInfoReply(P.encodeInfoString(P.NBD_INFO_NAME, 'x'))).toEqual({ type: 'other', info: P.NBD_INFO_NAME });
  });

  it('info replies with a wrong length, a minimum that is not a power of two, or a size past 2^53 are refused', () => {
    expect(() => P.decodeInfoReply(P.encodeInfoExport(1, 0).subarray(0, 11))).toThrow(/need 12/);
    expect(() => P.decodeInfoReply(P.encodeInfoBlockSize(3, 4096, 1 << 20))).toThrow(/power of two/);
    expect(() => P.decodeInfoReply(P.encodeInfoBlockSize(4096, 4096, 512))).toThrow(/below minimum/);
    const huge = P.encodeInfoExport(0, 0);
    huge.writeBigUInt64BE(1n << 60n, 2);
    expect(() => P.decodeInfoReply(huge)).toThrow(/2\^53/);
  });

  it('a meta context reply decodes to its id and name', () => {
    expect(P.decodeMetaContext(P.encodeMetaContext(7, P.NBD_META_BASE_ALLOCATION))).toEqual({ id: 7, name: 'base:allocation' });
    expect(() => P.decodeMetaContext(new Uint8Array(2))).toThrow(P.NbdProtocolError);
  });

  it('a reply magic tells a simple reply from a structured chunk; anything else is a protocol error', () => {
    expect(P.replyKind(P.encodeSimpleReply(1n, 0))).toBe('simple');
    expect(P.replyKind(P.encodeStructuredReplyHeader(1n, 0, 0, 0))).toBe('structured');
    expect(() => P.replyKind(new Uint8Array(4))).toThrow(/bad magic/);
  });

  it('OFFSET_DATA and OFFSET_HOLE payloads decode what the server encodes', () => {
    const data = P.encodeOffsetDataHeader(9n, 0, 123456, 10);
    expect(P.decodeOffsetDataOffset(Buffer.concat([data.subarray(P.STRUCTURED_REPLY_HEADER_SIZE), Buffer.alloc(10)]))).toBe(123456);
    const hole = P.encodeOffsetHole(9n, P.NBD_REPLY_FLAG_DONE, 4096, 8192);
    expect(P.decodeOffsetHole(hole.subarray(P.STRUCTURED_REPLY_HEADER_SIZE))).toEqual({ offset: 4096, length: 8192 });
    expect(() => P.decodeOffsetHole(P.encodeOffsetHole(9n, 0, 0, 0).subarray(P.STRUCTURED_REPLY_HEADER_SIZE))).toThrow(/zero length/);
    expect(() => P.decodeOffsetDataOffset(new Uint8Array(8))).toThrow(P.NbdProtocolError);
  });

  it('ERROR and ERROR_OFFSET chunks decode to the error, the message and the offset', () => {
    const e = P.encodeErrorChunk(1n, 0, P.NBD_ENOSPC, 'full');
    expect(P.decodeErrorChunk(P.NBD_REPLY_TYPE_ERROR, e.subarray(P.STRUCTURED_REPLY_HEADER_SIZE))).toEqual({ error: P.NBD_ENOSPC, message: 'full' });
    const eo = P.encodeErrorChunk(1n, 0, P.NBD_EIO, 'bad sector', 5 * 2 ** 32 + 512);
    expect(P.decodeErrorChunk(P.NBD_REPLY_TYPE_ERROR_OFFSET, eo.subarray(P.STRUCTURED_REPLY_HEADER_SIZE))).toEqual({
      error: P.NBD_EIO,
      message: 'bad sector',
      offset: 5 * 2 ** 32 + 512,
    });
  });

  it('a BLOCK_STATUS chunk decodes to its context id and extents; a ragged payload is refused', () => {
    const extents = [
      { length: 65536, flags: 0 },
      { length: 4096, flags: P.NBD_STATE_HOLE | P.NBD_STATE_ZERO },
    ];
    const b = P.encodeBlockStatusChunk(3n, P.NBD_REPLY_FLAG_DONE, 1, extents);
    expect(P.decodeBlockStatusChunk(b.subarray(P.STRUCTURED_REPLY_HEADER_SIZE))).toEqual({ contextId: 1, extents });
    expect(() => P.decodeBlockStatusChunk(new Uint8Array(10))).toThrow(P.NbdProtocolError);
    expect(() => P.decodeBlockStatusChunk(new Uint8Array(4))).toThrow(P.NbdProtocolError);
  });

  it('base:allocation flags map back to data and zero, inverse of allocationFlags', () => {
    for (const s of [
      { data: true, zero: false },
      { data: true, zero: true },
      { data: false, zero: true },
      { data: false, zero: false },
    ]) {
      expect(P.allocationStatus(P.allocationFlags(s))).toEqual(s);
    }
  });

  it('NBD errors map back to BlockError codes: EPERM is EROFS on writes and EACCES on reads, unknown is EIO', () => {
    expect(blockCodeForNbdError(P.NBD_EPERM, true)).toBe('EROFS');
    expect(blockCodeForNbdError(P.NBD_EPERM, false)).toBe('EACCES');
    expect(blockCodeForNbdError(P.NBD_ENOSPC, true)).toBe('ENOSPC');
    expect(blockCodeForNbdError(P.NBD_EINVAL, false)).toBe('EINVAL');
    expect(blockCodeForNbdError(P.NBD_ENOTSUP, true)).toBe('ENOTSUP');
    expect(blockCodeForNbdError(P.NBD_ESHUTDOWN, false)).toBe('EIO');
    expect(blockCodeForNbdError(12345, false)).toBe('EIO');
    // The server's mapping and the client's agree on the codes with their own NBD value.
    for (const code of ['ENOSPC', 'EINVAL', 'ENOTSUP', 'ENOMEM'] as const) {
      expect(blockCodeForNbdError(nbdErrorFor(new BlockError(code, 'x')), true)).toBe(code);
    }
  });

  it('ECONNREFUSED maps to ENXIO (nobody listens at the address)', () => {
    expect(codeForErrno('ECONNREFUSED')).toBe('ENXIO');
  });
});
