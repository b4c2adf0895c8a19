import { describe, expect, it } from 'vitest';
import type { Drive } from '../../src/drive.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import type { NbdExport } from '../../src/nbd/export.js';
import { Negotiation, type NegotiationHost, type NegotiationStep } from '../../src/nbd/negotiation.js';

const SIZE = 1 << 20;

function exportOf(name: string, description?: string, readOnly = false): NbdExport {
  const drive = { length: SIZE, readOnly: false } as unknown as Drive;
  return { name, drive, readOnly, ...(description === undefined ? {} : { description }) };
}

function hostOf(exports: NbdExport[], extra: Partial<NegotiationHost> = {}): NegotiationHost {
  return {
    findExport: (name) => exports.find((e) => e.name === name),
    allExports: () => exports,
    tlsAvailable: false,
    tlsRequired: false,
    maxRequest: 32 << 20,
    maxConnections: 16,
    ...extra,
  };
}

interface Reply {
  option: number;
  type: number;
  data: Buffer;
}

/** A negotiation fed a client's bytes `need` at a time, with every frame it sent. */
function negotiate(host: NegotiationHost, bytes: Buffer): { neg: Negotiation; steps: NegotiationStep[]; frames: Buffer[] } {
  const frames: Buffer[] = [];
  const neg = new Negotiation(host, (f) => frames.push(Buffer.from(f)));
  const steps: NegotiationStep[] = [];
  let at = 0;
  // An option without data still takes its (empty) data step.
  while (at < bytes.byteLength || (neg.need === 0 && !neg.awaitingOption)) {
    const n = neg.need;
    const step = neg.take(bytes.subarray(at, at + n));
    at += n;
    steps.push(step);
    if (step === 'selected' || step === 'abort') break;
  }
  return { neg, steps, frames };
}

/** Option reply frames, decoded. */
function replies(frames: Buffer[]): Reply[] {
  return frames.map((f) => {
    const h = P.decodeOptionReplyHeader(f);
    expect(f.byteLength).toBe(P.OPTION_REPLY_HEADER_SIZE + h.length);
    return { option: h.option, type: h.type, data: f.subarray(P.OPTION_REPLY_HEADER_SIZE) };
  });
}

const hello = (flags = P.NBD_FLAG_C_FIXED_NEWSTYLE | P.NBD_FLAG_C_NO_ZEROES) => P.encodeClientFlags(flags);
const wire = (...parts: Buffer[]) => Buffer.concat(parts);

describe('NBD server negotiation (the handshake as a state machine over plain bytes)', () => {
  it('greets with the magic and fixed newstyle + no zeroes', () => {
    expect(P.decodeServerGreeting(Negotiation.greeting())).toBe(P.NBD_FLAG_FIXED_NEWSTYLE | P.NBD_FLAG_NO_ZEROES);
  });

  it('asks for the client flags, then option headers, then exactly the data each announces', () => {
    const neg = new Negotiation(hostOf([]), () => {});
    expect(neg.need).toBe(P.CLIENT_FLAGS_SIZE);
    expect(neg.take(hello())).toBe('more');
    expect(neg.awaitingOption).toBe(true);
    expect(neg.need).toBe(P.OPTION_HEADER_SIZE);
    expect(neg.take(P.encodeOptionHeader(P.NBD_OPT_GO, 37))).toBe('more');
    expect(neg.awaitingOption).toBe(false);
    expect(neg.need).toBe(37);
    expect(neg.noZeroes).toBe(true);
  });

  it('refuses a client without fixed newstyle, unknown client flags, a bad option magic and oversized option data', () => {
    expect(() => negotiate(hostOf([]), hello(0))).toThrow(/fixed newstyle/);
    expect(() => negotiate(hostOf([]), hello(P.NBD_FLAG_C_FIXED_NEWSTYLE | 4))).toThrow(/unknown client flags 0x5/);
    const bad = P.encodeOptionHeader(P.NBD_OPT_LIST, 0);
    bad[0] ^= 0xff;
    expect(() => negotiate(hostOf([]), wire(hello(), bad))).toThrow(expect.objectContaining({ name: 'NbdProtocolError', message: expect.stringMatching(/bad magic/) }));
    expect(() => negotiate(hostOf([]), wire(hello(), P.encodeOptionHeader(P.NBD_OPT_GO, 64 * 1024 + 1)))).toThrow(/exceed 65536/);
  });

  it('NBD_OPT_GO for an unknown export: ERR_UNKNOWN, and the haggling goes on', () => {
    const { steps, frames, neg } = negotiate(hostOf([exportOf('disk')]), wire(hello(), P.encodeOption(P.NBD_OPT_GO, P.encodeInfoRequest('nope'))));
    expect(steps).toEqual(['more', 'more', 'more']);
    const [r] = replies(frames);
    expect(r).toMatchObject({ option: P.NBD_OPT_GO, type: P.NBD_REP_ERR_UNKNOWN });
    expect(r?.data.toString()).toBe("no export named 'nope'");
    expect(neg.selected).toBeNull();
    expect(neg.awaitingOption).toBe(true);
  });

  it('NBD_OPT_GO for a known export: INFO export, name, description, block size, ACK, then selected', () => {
    const disk = exportOf('disk', 'the disk', true);
    const req = P.encodeInfoRequest('disk', [P.NBD_INFO_NAME, P.NBD_INFO_DESCRIPTION]);
    const { steps, frames, neg } = negotiate(hostOf([disk]), wire(hello(), P.encodeOption(P.NBD_OPT_GO, req)));
    expect(steps.at(-1)).toBe('selected');
    expect(neg.selected).toBe(disk);
    const rs = replies(frames);
    expect(rs.map((r) => r.type)).toEqual([P.NBD_REP_INFO, P.NBD_REP_INFO, P.NBD_REP_INFO, P.NBD_REP_INFO, P.NBD_REP_ACK]);
    const info = P.decodeInfoReply(rs[0]?.data as Buffer);
    expect(info).toMatchObject({ type: 'export', size: SIZE });
    expect(info.type === 'export' && info.transmissionFlags & P.NBD_FLAG_READ_ONLY).toBeTruthy();
    expect(info.type === 'export' && info.transmissionFlags & P.NBD_FLAG_CAN_MULTI_CONN).toBeTruthy();
    expect(rs[1]?.data.subarray(2).toString()).toBe('disk');
    expect(rs[2]?.data.subarray(2).toString()).toBe('the disk');
    expect(P.decodeInfoReply(rs[3]?.data as Buffer)).toEqual({ type: 'block-size', minimum: 1, preferred: 4096, maximum: 32 << 20 });
    expect(() => neg.take(Buffer.alloc(0))).toThrow(/already over/);
  });

  it('NBD_OPT_INFO answers like GO but selects nothing', () => {
    const { steps, frames, neg } = negotiate(hostOf([exportOf('')]), wire(hello(), P.encodeOption(P.NBD_OPT_INFO, P.encodeInfoRequest(''))));
    expect(steps.at(-1)).toBe('more');
    expect(replies(frames).at(-1)?.type).toBe(P.NBD_REP_ACK);
    expect(neg.selected).toBeNull();
  });

  it('NBD_OPT_LIST: one SERVER entry per export, then ACK; with data it is ERR_INVALID', () => {
    const host = hostOf([exportOf('a', 'first'), exportOf('b')]);
    const rs = replies(negotiate(host, wire(hello(), P.encodeOption(P.NBD_OPT_LIST))).frames);
    expect(rs.map((r) => r.type)).toEqual([P.NBD_REP_SERVER, P.NBD_REP_SERVER, P.NBD_REP_ACK]);
    expect(rs[0]?.data).toEqual(P.encodeServerEntry('a', 'first'));
    expect(rs[1]?.data).toEqual(P.encodeServerEntry('b', ''));
    const bad = replies(negotiate(host, wire(hello(), P.encodeOption(P.NBD_OPT_LIST, Buffer.from('x')))).frames);
    expect(bad.map((r) => r.type)).toEqual([P.NBD_REP_ERR_INVALID]);
  });

  it('structured replies are acknowledged; meta contexts need them first, then base:allocation gets id 1', () => {
    const host = hostOf([exportOf('disk')]);
    const set = P.encodeOption(P.NBD_OPT_SET_META_CONTEXT, P.encodeMetaContextRequest('disk', [P.NBD_META_BASE_ALLOCATION]));
    const early = replies(negotiate(host, wire(hello(), set)).frames);
    expect(early.map((r) => r.type)).toEqual([P.NBD_REP_ERR_INVALID]);
    expect(early[0]?.data.toString()).toMatch(/STRUCTURED_REPLY first/);

    const go = P.encodeOption(P.NBD_OPT_GO, P.encodeInfoRequest('disk'));
    const { frames, neg } = negotiate(host, wire(hello(), P.encodeOption(P.NBD_OPT_STRUCTURED_REPLY), set, go));
    const rs = replies(frames);
    expect(rs[0]).toMatchObject({ option: P.NBD_OPT_STRUCTURED_REPLY, type: P.NBD_REP_ACK });
    expect(rs[1]).toMatchObject({ option: P.NBD_OPT_SET_META_CONTEXT, type: P.NBD_REP_META_CONTEXT });
    expect(P.decodeMetaContext(rs[1]?.data as Buffer)).toEqual({ id: 1, name: P.NBD_META_BASE_ALLOCATION });
    expect(rs[2]).toMatchObject({ option: P.NBD_OPT_SET_META_CONTEXT, type: P.NBD_REP_ACK });
    expect(neg.structured).toBe(true);
    expect(neg.allocation).toBe(true);
  });

  it('LIST_META_CONTEXT lists base:allocation for no query or "base:", nothing for another; meta set for one export does not carry to another', () => {
    const host = hostOf([exportOf('a'), exportOf('b')]);
    const sr = P.encodeOption(P.NBD_OPT_STRUCTURED_REPLY);
    const list = (queries: string[]) => P.encodeOption(P.NBD_OPT_LIST_META_CONTEXT, P.encodeMetaContextRequest('a', queries));
    const types = (q: string[]) => replies(negotiate(host, wire(hello(), sr, list(q))).frames).slice(1).map((r) => r.type);
    expect(types([])).toEqual([P.NBD_REP_META_CONTEXT, P.NBD_REP_ACK]);
    expect(types(['base:'])).toEqual([P.NBD_REP_META_CONTEXT, P.NBD_REP_ACK]);
    expect(types(['qemu:dirty-bitmap:x'])).toEqual([P.NBD_REP_ACK]);
    const unknown = P.encodeOption(P.NBD_OPT_LIST_META_CONTEXT, P.encodeMetaContextRequest('zz', []));
    expect(replies(negotiate(host, wire(hello(), sr, unknown)).frames)[1]?.type).toBe(P.NBD_REP_ERR_UNKNOWN);

    const set = P.encodeOption(P.NBD_OPT_SET_META_CONTEXT, P.encodeMetaContextRequest('a', [P.NBD_META_BASE_ALLOCATION]));
    const { neg } = negotiate(host, wire(hello(), sr, set, P.encodeOption(P.NBD_OPT_GO, P.encodeInfoRequest('b'))));
    expect(neg.selected?.name).toBe('b');
    expect(neg.allocation).toBe(false);
  });

  it('STARTTLS is refused with ERR_POLICY when the server has no TLS; with TLS it asks the connection to upgrade', () => {
    const starttls = P.encodeOption(P.NBD_OPT_STARTTLS);
    const plain = negotiate(hostOf([]), wire(hello(), starttls));
    expect(plain.steps.at(-1)).toBe('more');
    const [r] = replies(plain.frames);
    expect(r).toMatchObject({ option: P.NBD_OPT_STARTTLS, type: P.NBD_REP_ERR_POLICY });
    expect(r?.data.toString()).toBe('TLS is not available on this server');

    const secure = negotiate(hostOf([], { tlsAvailable: true }), wire(hello(), P.encodeOption(P.NBD_OPT_STRUCTURED_REPLY), starttls));
    expect(secure.steps.at(-1)).toBe('starttls');
    // The acknowledgement is the connection's to send (on the plain socket, before the TLS handshake).
    expect(secure.frames).toHaveLength(1);
    secure.neg.tlsStarted();
    expect(secure.neg.structured).toBe(false);
    expect(secure.neg.tlsActive).toBe(true);
    expect(secure.neg.take(P.encodeOptionHeader(P.NBD_OPT_STARTTLS, 0))).toBe('more');
    expect(secure.neg.take(Buffer.alloc(0))).toBe('more');
    expect(replies(secure.frames).at(-1)?.type).toBe(P.NBD_REP_ERR_INVALID);
  });

  it('with TLS required, options before STARTTLS get ERR_TLS_REQD, and EXPORT_NAME hangs up', () => {
    const host = hostOf([exportOf('')], { tlsAvailable: true, tlsRequired: true });
    const rs = replies(negotiate(host, wire(hello(), P.encodeOption(P.NBD_OPT_LIST))).frames);
    expect(rs.map((r) => r.type)).toEqual([P.NBD_REP_ERR_TLS_REQD]);
    expect(() => negotiate(host, wire(hello(), P.encodeOption(P.NBD_OPT_EXPORT_NAME)))).toThrow(/before TLS/);
  });

  it('NBD_OPT_ABORT is acknowledged and ends the negotiation; an unknown option is ERR_UNSUP', () => {
    const { steps, frames } = negotiate(hostOf([]), wire(hello(), P.encodeOption(99), P.encodeOption(P.NBD_OPT_ABORT)));
    expect(steps.at(-1)).toBe('abort');
    expect(replies(frames).map((r) => [r.option, r.type])).toEqual([
      [99, P.NBD_REP_ERR_UNSUP],
      [P.NBD_OPT_ABORT, P.NBD_REP_ACK],
    ]);
  });

  it('NBD_OPT_EXPORT_NAME: size and flags with or without the 124 zeroes; an unknown name hangs up', () => {
    const host = hostOf([exportOf('disk')]);
    const name = P.encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('disk'));
    const short = negotiate(host, wire(hello(), name));
    expect(short.steps.at(-1)).toBe('selected');
    expect(short.frames).toEqual([P.encodeExportNameReply(SIZE, short.frames[0]?.readUInt16BE(8) ?? -1, true)]);
    expect(short.frames[0]?.byteLength).toBe(10);
    const long = negotiate(host, wire(hello(P.NBD_FLAG_C_FIXED_NEWSTYLE), name));
    expect(long.frames[0]?.byteLength).toBe(10 + P.EXPORT_NAME_PADDING);
    expect(() => negotiate(host, wire(hello(), P.encodeOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('x'))))).toThrow(/no export named 'x'/);
  });
});
