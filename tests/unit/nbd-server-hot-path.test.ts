import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BufferPool } from '../../src/nbd/buffer-pool.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import { SocketReader } from '../../src/drivers/nbd/reader.js';
import { decodeServerRequest, offsetText, readReplyHeaderSize, writeReadReplyHeader, writeSimpleReply } from '../../src/nbd/request.js';

const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const request = fc.record({
  flags: fc.integer({ min: 0, max: 0xffff }),
  type: fc.integer({ min: 0, max: 0xffff }),
  cookie: u64,
  offset: u64,
  length: fc.integer({ min: 0, max: 0xffffffff }),
});

/** A request header as a client puts it on the wire (the offset may be past 2^53). */
function wire(r: { flags: number; type: number; cookie: bigint; offset: bigint; length: number }): Buffer {
  const b = Buffer.alloc(P.REQUEST_SIZE);
  b.writeUInt32BE(P.NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(r.flags, 4);
  b.writeUInt16BE(r.type, 6);
  b.writeBigUInt64BE(r.cookie, 8);
  b.writeBigUInt64BE(r.offset, 16);
  b.writeUInt32BE(r.length, 24);
  return b;
}

describe('server request decoding and reply headers (no BigInt per request)', () => {
  it('decodes every header as the generic decoder does, at any position in a chunk, offsets past 2^53 clamped', () => {
    fc.assert(
      fc.property(request, fc.nat(40), (r, at) => {
        const chunk = Buffer.concat([Buffer.alloc(at, 0xee), wire(r), Buffer.alloc(3, 0xee)]);
        const fast = decodeServerRequest(chunk, at);
        const slow = P.decodeRequest(wire(r));
        expect({ flags: fast.flags, type: fast.type, cookie: fast.cookie, offset: fast.offset, length: fast.length }).toEqual(slow);
      }),
    );
    const edge = { flags: 0, type: 0, cookie: 0n, length: 0 };
    expect(decodeServerRequest(wire({ ...edge, offset: 2n ** 53n - 1n }), 0).offset).toBe(Number.MAX_SAFE_INTEGER);
    expect(decodeServerRequest(wire({ ...edge, offset: 2n ** 53n }), 0).offset).toBe(Number.MAX_SAFE_INTEGER);
    expect(decodeServerRequest(wire({ ...edge, offset: 2n ** 53n - 2n }), 0).offset).toBe(2 ** 53 - 2);
  });

  it('keeps every digit of an offset past 2^53 for messages (offset itself stays clamped for the bounds checks)', () => {
    const edge = { flags: 0, type: 0, cookie: 0n, length: 0 };
    for (const offset of [2n ** 53n, 2n ** 63n, 2n ** 63n + 12345n, 2n ** 64n - 1n]) {
      const r = decodeServerRequest(wire({ ...edge, offset }), 0);
      expect(r.offset).toBe(Number.MAX_SAFE_INTEGER);
      expect(offsetText(r)).toBe(offset.toString());
    }
    fc.assert(
      fc.property(u64, (offset) => {
        expect(offsetText(decodeServerRequest(wire({ ...edge, offset }), 0))).toBe(offset.toString());
      }),
    );
  });

  it('refuses a bad magic with a protocol error', () => {
    const b = wire({ flags: 0, type: 0, cookie: 1n, offset: 0n, length: 0 });
    b.writeUInt32BE(0x12345678, 0);
    expect(() => decodeServerRequest(b, 0)).toThrow(P.NbdProtocolError);
  });

  it('writes READ reply headers and simple replies byte for byte as the generic encoders', () => {
    fc.assert(
      // Lengths a READ can have (at most maxRequest, far below 2^32 - 8 so the chunk length fits).
      fc.property(request.map((r) => ({ ...r, length: r.length >>> 1 })), fc.boolean(), (r, structured) => {
        const req = decodeServerRequest(wire({ ...r, offset: r.offset & (2n ** 53n - 1n) }), 0);
        const head = Buffer.alloc(readReplyHeaderSize(structured));
        writeReadReplyHeader(head, req, structured);
        const expected = structured
          ? P.encodeOffsetDataHeader(r.cookie, P.NBD_REPLY_FLAG_DONE, req.offset, req.length)
          : P.encodeSimpleReply(r.cookie, P.NBD_SUCCESS);
        expect(head.toString('hex')).toBe(expected.toString('hex'));
        const simple = Buffer.alloc(P.SIMPLE_REPLY_SIZE);
        writeSimpleReply(simple, req, P.NBD_EIO);
        expect(simple.toString('hex')).toBe(P.encodeSimpleReply(r.cookie, P.NBD_EIO).toString('hex'));
      }),
      { numRuns: 200 },
    );
  });
});

describe('BufferPool', () => {
  it('hands back a buffer of the exact size given back, and a new one otherwise', () => {
    const pool = new BufferPool(1 << 20);
    const a = pool.take(4096);
    expect(a.byteLength).toBe(4096);
    pool.give(a);
    expect(pool.idleBytes).toBe(4096);
    expect(pool.take(8192)).not.toBe(a);
    expect(pool.take(4096)).toBe(a);
    expect(pool.idleBytes).toBe(0);
  });

  it('never holds more than its limit idle, whatever sizes come back', () => {
    const pool = new BufferPool(64 * 1024);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 40_000 }), { maxLength: 100 }), (sizes) => {
        for (const s of sizes) pool.give(Buffer.alloc(s));
        expect(pool.idleBytes).toBeLessThanOrEqual(64 * 1024);
      }),
    );
  });
});

/** Just enough of a socket for a SocketReader: data events, pause and resume. */
class FakeSocket extends EventEmitter {
  paused = false;
  pause() {
    this.paused = true;
    return this;
  }
  resume() {
    this.paused = false;
    return this;
  }
  isPaused() {
    return this.paused;
  }
}

describe('SocketReader fill and decodeNow', () => {
  it('returns the stream in order whatever the chunking: headers decoded in place or across chunks, payloads filled', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 12 }), fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1 }), async (payloads, cuts) => {
        const stream = Buffer.concat(payloads.flatMap((n, i) => [wire({ flags: 0, type: 1, cookie: BigInt(i), offset: 0n, length: n }), Buffer.alloc(n, i + 1)]));
        const socket = new FakeSocket();
        const reader = new SocketReader(socket as unknown as Socket, 1 << 20);
        // Delivered in uneven chunks, some before the reads start and some while they wait.
        let pos = 0;
        let k = 0;
        const deliver = () => {
          const n = cuts[k++ % cuts.length] as number;
          socket.emit('data', stream.subarray(pos, Math.min(stream.length, pos + n)));
          pos += n;
        };
        for (let i = 0; i < 3 && pos < stream.length; i++) deliver();
        const feeder = (async () => {
          while (pos < stream.length) {
            await new Promise((r) => setImmediate(r));
            deliver();
          }
        })();
        for (const [i, n] of payloads.entries()) {
          const req = reader.decodeNow(P.REQUEST_SIZE, decodeServerRequest) ?? decodeServerRequest(await reader.read(P.REQUEST_SIZE), 0);
          expect([req.cookieLow, req.length]).toEqual([i, n]);
          const payload = Buffer.alloc(n);
          if (!reader.fillNow(payload)) await reader.fill(payload);
          expect(payload.equals(Buffer.alloc(n, i + 1))).toBe(true);
        }
        await feeder;
        expect(reader.buffered).toBe(0);
      }),
      { numRuns: 60 },
    );
  });
});
