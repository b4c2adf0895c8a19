import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockLayer, DirtyBitmap, NbdServer } from '../../src/index.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import { bitmapToExtents } from '../../src/nbd/block-status.js';
import { resolveContexts } from '../../src/nbd/export-contexts.js';
import { ExtentArray, MAX_EXTENTS } from '../../src/nbd/extent-array.js';
import { type ExportContexts, MetaSelection } from '../../src/nbd/meta-contexts.js';
import { Negotiation, type NegotiationHost } from '../../src/nbd/negotiation.js';
import { ServerRequest } from '../../src/nbd/request.js';

const MiB = 2 ** 20;
const bm = (name: string) => new DirtyBitmap(name, MiB, { granularity: 65536, recording: true, persistent: false });
const both: ExportContexts = { bitmaps: [bm('a'), bm('b')], allocationDepth: true };
const names = (s: MetaSelection, list: boolean) => s.replies(list).map((r) => `${r.id} ${r.name}`);

/** The (length, flags) pairs an array holds, read back from its frame. */
function pairs(ea: ExtentArray): [number, number][] {
  const f = ea.frame(new ServerRequest(0, P.NBD_CMD_BLOCK_STATUS, 0, 1, 0, 0), true, 9);
  const out: [number, number][] = [];
  for (let o = P.STRUCTURED_REPLY_HEADER_SIZE + 4; o < f.byteLength; o += 8) out.push([f.readUInt32BE(o), f.readUInt32BE(o + 4)]);
  return out;
}

describe('meta context queries, matched as QEMU matches them', () => {
  it('LIST with no query lists every context, in QEMU order, with id 0', () => {
    expect(names(MetaSelection.match('e', both, [], true), true)).toEqual(['0 base:allocation', '0 qemu:allocation-depth', '0 qemu:dirty-bitmap:a', '0 qemu:dirty-bitmap:b']);
    expect(names(MetaSelection.match('e', { bitmaps: [], allocationDepth: false }, [], true), true)).toEqual(['0 base:allocation']);
  });

  it('LIST of a namespace ("base:", "qemu:", "qemu:dirty-bitmap:") lists all of it; SET of the same selects nothing', () => {
    expect(names(MetaSelection.match('e', both, ['qemu:'], true), true)).toEqual(['0 qemu:allocation-depth', '0 qemu:dirty-bitmap:a', '0 qemu:dirty-bitmap:b']);
    expect(names(MetaSelection.match('e', both, ['qemu:dirty-bitmap:'], true), true)).toEqual(['0 qemu:dirty-bitmap:a', '0 qemu:dirty-bitmap:b']);
    expect(names(MetaSelection.match('e', both, ['base:'], true), true)).toEqual(['0 base:allocation']);
    for (const q of ['qemu:', 'qemu:dirty-bitmap:', 'base:']) expect(MetaSelection.match('e', both, [q], false).count).toBe(0);
  });

  it('SET gives each context its id (base 1, depth 2, bitmap i 3+i); unknown names and namespaces are ignored', () => {
    const s = MetaSelection.match('e', both, ['qemu:dirty-bitmap:b', 'nope:x', 'qemu:dirty-bitmap:zz', 'qemu:other', 'base:allocation', 'qemu:allocation-depth'], false);
    expect(names(s, false)).toEqual(['1 base:allocation', '2 qemu:allocation-depth', '4 qemu:dirty-bitmap:b']);
    expect(s.count).toBe(3);
    expect(s.selectedBitmaps.map((x) => x.bitmap.name)).toEqual(['b']);
    // allocation-depth only where the export serves it.
    expect(MetaSelection.match('e', { bitmaps: [], allocationDepth: false }, ['qemu:allocation-depth'], false).count).toBe(0);
  });

  it('a negotiation over a served export: SET selects a bitmap, LIST on "qemu:" answers the export\'s contexts', async () => {
    await using layer = new BlockLayer();
    const drive = await layer.openDrive({ driver: 'memory', size: MiB });
    drive.addDirtyBitmap('b0', { disabled: true });
    const e = { name: 'x', drive, bitmaps: ['b0'], allocationDepth: true, contexts: resolveContexts({ name: 'x', drive, bitmaps: ['b0'], allocationDepth: true }, true) };
    const host: NegotiationHost = { findExport: (n) => (n === 'x' ? e : undefined), allExports: () => [e], tlsAvailable: false, tlsRequired: false, maxRequest: MiB, maxConnections: 4 };
    const frames: Buffer[] = [];
    const neg = new Negotiation(host, (f) => frames.push(Buffer.from(f)));
    const feed = (b: Buffer) => {
      for (let at = 0; at < b.byteLength || (neg.need === 0 && !neg.awaitingOption); ) {
        const n = neg.need;
        const step = neg.take(b.subarray(at, at + n));
        at += n;
        if (step === 'selected') return;
      }
    };
    feed(P.encodeClientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE));
    feed(P.encodeOption(P.NBD_OPT_STRUCTURED_REPLY));
    feed(P.encodeOption(P.NBD_OPT_LIST_META_CONTEXT, P.encodeMetaContextRequest('x', ['qemu:'])));
    feed(P.encodeOption(P.NBD_OPT_SET_META_CONTEXT, P.encodeMetaContextRequest('x', ['qemu:dirty-bitmap:b0'])));
    const contexts = frames
      .map((f) => ({ h: P.decodeOptionReplyHeader(f), d: f.subarray(P.OPTION_REPLY_HEADER_SIZE) }))
      .filter((r) => r.h.type === P.NBD_REP_META_CONTEXT)
      .map((r) => ({ option: r.h.option, ...P.decodeMetaContext(r.d) }));
    expect(contexts).toEqual([
      { option: P.NBD_OPT_LIST_META_CONTEXT, id: 0, name: 'qemu:allocation-depth' },
      { option: P.NBD_OPT_LIST_META_CONTEXT, id: 0, name: 'qemu:dirty-bitmap:b0' },
      { option: P.NBD_OPT_SET_META_CONTEXT, id: 3, name: 'qemu:dirty-bitmap:b0' },
    ]);
    expect(neg.meta?.count).toBe(1);
    expect(neg.allocation).toBe(false);
    // The export replaced under the same name before GO: what was selected for the old one is dropped (QEMU compares the export).
    const replaced = { ...e, contexts: resolveContexts({ name: 'x', drive, bitmaps: ['b0'] }, true) };
    e.contexts = replaced.contexts;
    feed(P.encodeOption(P.NBD_OPT_GO, P.encodeInfoRequest('x')));
    expect(neg.selected).toBe(e);
    expect(neg.meta).toBeNull();
  });
});

describe('block status extents', () => {
  it('an extent array merges equal flags, splits at 2^32 - 1 bytes, and refuses a new extent when full', () => {
    const ea = new ExtentArray();
    ea.reset(2);
    expect(ea.add(100, 1)).toBe(true);
    expect(ea.add(0xffffffff - 50, 1)).toBe(true); // the sum passes 32 bits: a second extent
    expect(ea.add(5, 0)).toBe(false);
    expect(pairs(ea)).toEqual([
      [100, 1],
      [0xffffffff - 50, 1],
    ]);
    ea.reset(MAX_EXTENTS);
    for (let i = 0; i < 1000; i++) ea.add(512, i & 1);
    expect(ea.count).toBe(1000);
    expect(pairs(ea)[999]).toEqual([512, 1]);
  });

  it('property: a bitmap\'s extents cover the request exactly, alternate dirty/clean, and agree with a model per granule; REQ_ONE gives the first run', () => {
    const G = 4096;
    const SIZE = 256 * G + 100;
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(SIZE - 1), fc.integer({ min: 1, max: 40 * G })), { maxLength: 20 }),
        fc.nat(SIZE - 1),
        fc.integer({ min: 1, max: SIZE }),
        (writes, offset, len) => {
          const length = Math.min(len, SIZE - offset);
          const b = new DirtyBitmap('m', SIZE, { granularity: G, recording: true, persistent: false });
          const model = new Set<number>();
          for (const [o, l] of writes) {
            const n = Math.min(l, SIZE - o);
            b.record(o, n);
            for (let g = Math.floor(o / G); g < Math.ceil((o + n) / G); g++) model.add(g);
          }
          const ea = new ExtentArray();
          ea.reset(MAX_EXTENTS);
          bitmapToExtents(b, offset, length, ea);
          const got = pairs(ea);
          expect(got.reduce((s, [l]) => s + l, 0)).toBe(length);
          let pos = offset;
          got.forEach(([l, flags], i) => {
            if (i > 0) expect(flags).not.toBe(got[i - 1]?.[1]);
            for (let p = pos; p < pos + l; p += Math.max(1, Math.min(G, pos + l - p))) expect(flags).toBe(model.has(Math.floor(p / G)) ? 1 : 0);
            expect(flags).toBe(model.has(Math.floor((pos + l - 1) / G)) ? 1 : 0);
            pos += l;
          });
          const one = new ExtentArray();
          one.reset(1);
          bitmapToExtents(b, offset, length, one);
          expect(pairs(one)).toEqual([got[0]]);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('exported bitmaps (QEMU nbd_export_create)', () => {
  it('found on the node below a filter; refused when missing, enabled on a read-only export of a writable node, busy, or inconsistent; busy while exported', async () => {
    await using layer = new BlockLayer();
    layer.createThrottleGroup('g', { iopsTotal: 1000 });
    const drive = await layer.openDrive({ driver: 'throttle', throttleGroup: 'g', file: { driver: 'memory', size: MiB } });
    drive.addDirtyBitmap('on');
    drive.addDirtyBitmap('off', { disabled: true });
    const server = new NbdServer();
    expect(() => server.addExport({ name: 'a', drive, bitmaps: ['nope'] })).toThrow(expect.objectContaining({ code: 'ENOENT', message: "Bitmap 'nope' is not found" }));
    expect(() => server.addExport({ name: 'a', drive, readOnly: true, bitmaps: ['on'] })).toThrow(expect.objectContaining({ code: 'EINVAL', message: "Enabled bitmap 'on' incompatible with readonly export" }));
    const broken = new DirtyBitmap('broken', MiB, { granularity: 65536, recording: false, persistent: true, inconsistent: true });
    expect(() => server.addExport({ name: 'a', drive, bitmaps: [broken] })).toThrow(expect.objectContaining({ code: 'EINVAL', message: expect.stringMatching(/inconsistent/) }));
    server.addExport({ name: 'a', drive, readOnly: true, bitmaps: ['off'] });
    server.addExport({ name: 'b', drive, bitmaps: ['on'] });
    expect(drive.dirtyBitmaps().map((b) => b.busy)).toEqual([true, true]);
    // A failed export holds nothing; a busy bitmap cannot be exported twice nor changed.
    expect(() => server.addExport({ name: 'c', drive, bitmaps: ['on'] })).toThrow(expect.objectContaining({ code: 'EBUSY', message: expect.stringMatching(/in use by another operation/) }));
    expect(() => drive.clearDirtyBitmap('off')).toThrow(expect.objectContaining({ code: 'EBUSY' }));
    await server.removeExport('a');
    expect(drive.dirtyBitmaps().map((b) => b.busy)).toEqual([true, false]);
    await server.close();
    expect(drive.dirtyBitmaps().map((b) => b.busy)).toEqual([false, false]);
  });
});
