import { describe, expect, it } from 'vitest';
import { BlockError } from '../../src/errors.js';
import { nbdErrorFor } from '../../src/drivers/nbd/errors.js';
import * as P from '../../src/drivers/nbd/protocol.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('NBD wire constants', () => {
  it('magics are the protocol document values', () => {
    expect(Buffer.from(P.NBD_INIT_MAGIC.toString(16), 'hex').toString('latin1')).toBe('NBDMAGIC');
    expect(Buffer.from(P.NBD_OPTS_MAGIC.toString(16), 'hex').toString('latin1')).toBe('IHAVEOPT');
    expect(P.NBD_REP_MAGIC).toBe(0x3e889045565a9n);
    expect(P.NBD_REQUEST_MAGIC).toBe(0x25609513);
    expect(P.NBD_SIMPLE_REPLY_MAGIC).toBe(0x67446698);
    expect(P.NBD_STRUCTURED_REPLY_MAGIC).toBe(0x668e33ef);
  });

  it('option, reply, command and error numbers match proto.md', () => {
    expect([P.NBD_OPT_EXPORT_NAME, P.NBD_OPT_ABORT, P.NBD_OPT_LIST, P.NBD_OPT_STARTTLS, P.NBD_OPT_INFO, P.NBD_OPT_GO]).toEqual([1, 2, 3, 5, 6, 7]);
    expect([P.NBD_OPT_STRUCTURED_REPLY, P.NBD_OPT_LIST_META_CONTEXT, P.NBD_OPT_SET_META_CONTEXT]).toEqual([8, 9, 10]);
    expect([P.NBD_REP_ERR_UNSUP, P.NBD_REP_ERR_POLICY, P.NBD_REP_ERR_INVALID, P.NBD_REP_ERR_UNKNOWN]).toEqual([2 ** 31 + 1, 2 ** 31 + 2, 2 ** 31 + 3, 2 ** 31 + 6]);
    expect([P.NBD_CMD_READ, P.NBD_CMD_WRITE, P.NBD_CMD_DISC, P.NBD_CMD_FLUSH, P.NBD_CMD_TRIM, P.NBD_CMD_CACHE, P.NBD_CMD_WRITE_ZEROES, P.NBD_CMD_BLOCK_STATUS]).toEqual([
      0, 1, 2, 3, 4, 5, 6, 7,
    ]);
    expect([P.NBD_CMD_FLAG_FUA, P.NBD_CMD_FLAG_NO_HOLE, P.NBD_CMD_FLAG_DF, P.NBD_CMD_FLAG_REQ_ONE, P.NBD_CMD_FLAG_FAST_ZERO]).toEqual([1, 2, 4, 8, 16]);
    expect([P.NBD_FLAG_SEND_TRIM, P.NBD_FLAG_SEND_WRITE_ZEROES, P.NBD_FLAG_CAN_MULTI_CONN, P.NBD_FLAG_SEND_CACHE, P.NBD_FLAG_SEND_FAST_ZERO]).toEqual([32, 64, 256, 1024, 2048]);
    expect([P.NBD_EPERM, P.NBD_EIO, P.NBD_ENOMEM, P.NBD_EINVAL, P.NBD_ENOSPC, P.NBD_EOVERFLOW, P.NBD_ENOTSUP, P.NBD_ESHUTDOWN]).toEqual([1, 5, 12, 22, 28, 75, 95, 108]);
    expect([P.NBD_REPLY_TYPE_OFFSET_DATA, P.NBD_REPLY_TYPE_OFFSET_HOLE, P.NBD_REPLY_TYPE_BLOCK_STATUS, P.NBD_REPLY_TYPE_ERROR, P.NBD_REPLY_TYPE_ERROR_OFFSET]).toEqual([1, 2, 5, 32769, 32770]);
  });
});

describe('handshake encoding', () => {
  it('the greeting is NBDMAGIC, IHAVEOPT and the 16-bit handshake flags', () => {
    const g = P.encodeServerGreeting(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES);
    expect(hex(g)).toBe('4e42444d41474943' + '49484156454f5054' + '0003');
  });

  it('an option header round-trips and a wrong magic is refused', () => {
    const h = P.encodeOptionHeader(P.NBD_OPT_GO, 12);
    expect(P.decodeOptionHeader(h)).toEqual({ option: 7, length: 12 });
    h[0] ^= 1;
    expect(() => P.decodeOptionHeader(h)).toThrow(P.NbdProtocolError);
  });

  it('an option reply carries magic, option, type and data length', () => {
    const r = P.encodeOptionReply(P.NBD_OPT_LIST, P.NBD_REP_ERR_UNSUP, Buffer.from('no'));
    expect(hex(r)).toBe('0003e889045565a9' + '00000003' + '80000001' + '00000002' + '6e6f');
    expect(P.decodeOptionReplyHeader(r)).toEqual({ option: 3, type: P.NBD_REP_ERR_UNSUP, length: 2 });
  });

  it('the EXPORT_NAME reply pads with 124 zeros unless NO_ZEROES was agreed', () => {
    expect(P.encodeExportNameReply(1 << 20, 0x0d, false).byteLength).toBe(134);
    const short = P.encodeExportNameReply(1 << 20, 0x0d, true);
    expect(hex(short)).toBe('0000000000100000' + '000d');
  });

  it('info replies: export, name, block size', () => {
    expect(hex(P.encodeInfoExport(4096, 3))).toBe('0000' + '0000000000001000' + '0003');
    expect(hex(P.encodeInfoString(P.NBD_INFO_NAME, 'ab'))).toBe('0001' + '6162');
    expect(hex(P.encodeInfoBlockSize(1, 4096, 32 << 20))).toBe('0003' + '00000001' + '00001000' + '02000000');
  });

  it('INFO/GO data round-trips; lengths that do not add up are refused', () => {
    const d = P.encodeInfoRequest('disk', [P.NBD_INFO_NAME, P.NBD_INFO_BLOCK_SIZE]);
    expect(P.decodeInfoRequest(d)).toEqual({ name: 'disk', requests: [1, 3] });
    expect(() => P.decodeInfoRequest(d.subarray(0, d.byteLength - 1))).toThrow(/runs past the end/);
    expect(() => P.decodeInfoRequest(Buffer.concat([d, Buffer.from([0])]))).toThrow(/trailing/);
    const huge = Buffer.alloc(8);
    huge.writeUInt32BE(P.NBD_MAX_STRING_SIZE + 1, 0);
    expect(() => P.decodeInfoRequest(huge)).toThrow(/exceeds/);
  });

  it('names a client sends must be UTF-8: invalid bytes are refused, not made U+FFFD; a BOM stays part of the name', () => {
    const raw = (name: Buffer) => {
      const b = Buffer.alloc(4 + name.byteLength + 2);
      b.writeUInt32BE(name.byteLength, 0);
      name.copy(b, 4);
      return b;
    };
    expect(() => P.decodeInfoRequest(raw(Buffer.from([0xff, 0xfe])))).toThrow(P.NbdProtocolError);
    expect(() => P.decodeInfoRequest(raw(Buffer.from([0x61, 0xc3])))).toThrow(/info request: name is not valid UTF-8/);
    // CESU-style surrogates encoded as 3 bytes are not UTF-8 either.
    expect(() => P.decodeInfoRequest(raw(Buffer.from([0xed, 0xa0, 0x80])))).toThrow(/not valid UTF-8/);
    expect(P.decodeInfoRequest(raw(Buffer.from('\uFFFD\uFFFD'))).name).toBe('\uFFFD\uFFFD');
    expect(P.decodeInfoRequest(raw(Buffer.from([0xef, 0xbb, 0xbf, 0x64]))).name).toBe('\uFEFFd');
    const meta = Buffer.concat([raw(Buffer.from([0xff])).subarray(0, 5), Buffer.from([0, 0, 0, 0])]);
    expect(() => P.decodeMetaContextRequest(meta)).toThrow(/export name is not valid UTF-8/);
    const query = P.encodeMetaContextRequest('d', ['base:x']);
    query[query.byteLength - 1] = 0xff;
    expect(() => P.decodeMetaContextRequest(query)).toThrow(/query is not valid UTF-8/);
    expect(P.decodeUtf8(Buffer.from('d\u00e9'), 'x')).toBe('d\u00e9');
    expect(P.isWellFormedUtf16('a\ud83d\ude00')).toBe(true);
    expect(P.isWellFormedUtf16('a\udcff')).toBe(false);
    expect(P.isWellFormedUtf16('\ud83d')).toBe(false);
  });

  it('meta context requests round-trip; replies carry the id and the name', () => {
    const d = P.encodeMetaContextRequest('disk', ['base:allocation', 'qemu:dirty-bitmap:x']);
    expect(P.decodeMetaContextRequest(d)).toEqual({ exportName: 'disk', queries: ['base:allocation', 'qemu:dirty-bitmap:x'] });
    expect(hex(P.encodeMetaContext(1, 'base:allocation'))).toBe(`00000001${Buffer.from('base:allocation').toString('hex')}`);
  });

  it('a LIST entry is the name length, the name, then the description', () => {
    expect(hex(P.encodeServerEntry('a', 'xy'))).toBe('00000001' + '61' + '7879');
  });
});

describe('transmission encoding', () => {
  it('a request round-trips through its 28 bytes', () => {
    const r = { flags: P.NBD_CMD_FLAG_FUA, type: P.NBD_CMD_WRITE, cookie: 0x0102030405060708n, offset: 2 ** 40, length: 65536 };
    const b = P.encodeRequest(r);
    expect(b.byteLength).toBe(28);
    expect(hex(b)).toBe('25609513' + '0001' + '0001' + '0102030405060708' + '0000010000000000' + '00010000');
    expect(P.decodeRequest(b)).toEqual(r);
  });

  it('a request with a bad magic is a protocol error', () => {
    const b = P.encodeRequest({ flags: 0, type: 0, cookie: 1n, offset: 0, length: 1 });
    b.writeUInt32BE(0xdeadbeef, 0);
    expect(() => P.decodeRequest(b)).toThrow(/bad magic/);
  });

  it('offsets beyond 2^53 decode to a value every bounds check refuses', () => {
    const b = P.encodeRequest({ flags: 0, type: 0, cookie: 1n, offset: 0, length: 1 });
    b.writeBigUInt64BE(0xfffffffffffffe00n, 16);
    expect(P.decodeRequest(b).offset).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('simple and structured reply headers', () => {
    expect(hex(P.encodeSimpleReply(7n, P.NBD_EPERM))).toBe('67446698' + '00000001' + '0000000000000007');
    expect(P.decodeSimpleReply(P.encodeSimpleReply(9n, 0))).toEqual({ error: 0, cookie: 9n });
    const s = P.encodeStructuredReplyHeader(5n, P.NBD_REPLY_FLAG_DONE, P.NBD_REPLY_TYPE_NONE, 0);
    expect(hex(s)).toBe('668e33ef' + '0001' + '0000' + '0000000000000005' + '00000000');
    expect(P.decodeStructuredReplyHeader(s)).toEqual({ flags: 1, type: 0, cookie: 5n, length: 0 });
  });

  it('OFFSET_DATA counts the 8-byte offset in the chunk length', () => {
    const h = P.encodeOffsetDataHeader(1n, P.NBD_REPLY_FLAG_DONE, 4096, 512);
    expect(P.decodeStructuredReplyHeader(h)).toEqual({ flags: 1, type: P.NBD_REPLY_TYPE_OFFSET_DATA, cookie: 1n, length: 520 });
    expect(h.readBigUInt64BE(20)).toBe(4096n);
  });

  it('OFFSET_HOLE carries offset and length', () => {
    const h = P.encodeOffsetHole(1n, 0, 8192, 4096);
    expect(P.decodeStructuredReplyHeader(h).length).toBe(12);
    expect(hex(h.subarray(20))).toBe('0000000000002000' + '00001000');
  });

  it('an error chunk holds the error, the message length and the message (ERROR_OFFSET adds the offset)', () => {
    const e = P.encodeErrorChunk(3n, P.NBD_REPLY_FLAG_DONE, P.NBD_EIO, 'bad');
    expect(P.decodeStructuredReplyHeader(e)).toEqual({ flags: 1, type: P.NBD_REPLY_TYPE_ERROR, cookie: 3n, length: 9 });
    expect(hex(e.subarray(20))).toBe('00000005' + '0003' + '626164');
    const o = P.encodeErrorChunk(3n, 0, P.NBD_EIO, '', 512);
    expect(P.decodeStructuredReplyHeader(o)).toMatchObject({ type: P.NBD_REPLY_TYPE_ERROR_OFFSET, length: 14 });
    expect(o.readBigUInt64BE(26)).toBe(512n);
  });

  it('a block status chunk is the context id and (length, flags) pairs', () => {
    const c = P.encodeBlockStatusChunk(2n, P.NBD_REPLY_FLAG_DONE, 1, [
      { length: 65536, flags: 0 },
      { length: 4096, flags: P.NBD_STATE_HOLE | P.NBD_STATE_ZERO },
    ]);
    expect(P.decodeStructuredReplyHeader(c)).toEqual({ flags: 1, type: P.NBD_REPLY_TYPE_BLOCK_STATUS, cookie: 2n, length: 20 });
    expect(hex(c.subarray(20))).toBe('00000001' + '00010000' + '00000000' + '00001000' + '00000003');
  });

  it('base:allocation: HOLE where there is no data, ZERO where it reads as zeros', () => {
    expect(P.allocationFlags({ data: true, zero: false })).toBe(0);
    expect(P.allocationFlags({ data: false, zero: true })).toBe(P.NBD_STATE_HOLE | P.NBD_STATE_ZERO);
    expect(P.allocationFlags({ data: true, zero: true })).toBe(P.NBD_STATE_ZERO);
    expect(P.allocationFlags({ data: false, zero: false })).toBe(P.NBD_STATE_HOLE);
  });
});

describe('BlockError to NBD error', () => {
  it.each([
    ['EROFS', P.NBD_EPERM],
    ['EACCES', P.NBD_EPERM],
    ['ENOSPC', P.NBD_ENOSPC],
    ['EINVAL', P.NBD_EINVAL],
    ['ENOTSUP', P.NBD_ENOTSUP],
    ['ENOMEM', P.NBD_ENOMEM],
    ['EIO', P.NBD_EIO],
    ['ECORRUPT', P.NBD_EIO],
    ['ECLOSED', P.NBD_EIO],
  ] as const)('%s maps to NBD error %i', (code, nbd) => {
    expect(nbdErrorFor(new BlockError(code, 'x'))).toBe(nbd);
  });

  it('anything that is not a BlockError is EIO', () => {
    expect(nbdErrorFor(Object.assign(new Error('x'), { code: 'EINVAL' }))).toBe(P.NBD_EIO);
    expect(nbdErrorFor('boom')).toBe(P.NBD_EIO);
  });
});
