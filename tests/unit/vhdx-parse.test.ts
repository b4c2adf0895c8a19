import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { batGeometry, batIndex, Bat } from '../../src/drivers/vhdx/bat.js';
import { autoBlockSize, createLayout } from '../../src/drivers/vhdx/create.js';
import { crc32c } from '../../src/drivers/vhdx/crc32c.js';
import { guidBytes, guidText } from '../../src/drivers/vhdx/guid.js';
import { parseHeader, pickHeader, serializeHeader, type VhdxHeader } from '../../src/drivers/vhdx/header.js';
import { findActiveSequence, parseLogEntry } from '../../src/drivers/vhdx/log-parse.js';
import { vhdxDriver } from '../../src/drivers/vhdx/index.js';
import { buildLogEntry } from '../helpers/vhdx-log.js';

const header = (sequence: bigint): VhdxHeader => ({
  sequence,
  fileWriteGuid: new Uint8Array(16).fill(1),
  dataWriteGuid: new Uint8Array(16).fill(2),
  logGuid: new Uint8Array(16),
  logVersion: 0,
  version: 1,
  logLength: 1 << 20,
  logOffset: 1 << 20,
});

describe('vhdx: checksums and GUIDs', () => {
  it('CRC-32C of "123456789" is the standard check value 0xE3069283', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
  });

  it('a GUID reads back as written, with data1..data3 stored little-endian', () => {
    const b = guidBytes('2DC27766-F623-4200-9D64-115E9BFD4A08');
    expect(Array.from(b.subarray(0, 8))).toEqual([0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42]);
    expect(guidText(b)).toBe('2DC27766-F623-4200-9D64-115E9BFD4A08');
  });
});

describe('vhdx: probe', () => {
  it('recognizes "vhdxfile" and never raw data', () => {
    expect(vhdxDriver.probe!(new TextEncoder().encode('vhdxfile\0\0'))).toBe(100);
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (b) => (vhdxDriver.probe!(b) === 100) === (new TextDecoder().decode(b.subarray(0, 8)) === 'vhdxfile')));
    expect(vhdxDriver.probe!(new TextEncoder().encode('vhdxfil'))).toBe(0);
  });
});

describe('vhdx: headers', () => {
  it('the valid header with the higher sequence number is current', () => {
    const a = serializeHeader(header(5n));
    const b = serializeHeader(header(6n));
    expect(pickHeader(a, b, 'n').index).toBe(1);
    expect(pickHeader(b, a, 'n').index).toBe(0);
  });

  it('a header with a bad checksum is passed over; two bad ones are refused', () => {
    const a = serializeHeader(header(9n));
    const b = serializeHeader(header(3n));
    a[100] ^= 1; // inside the checksummed 4 KiB
    expect(parseHeader(a)).toBeUndefined();
    expect(pickHeader(a, b, 'n').index).toBe(1);
    b[8] ^= 1;
    expect(() => pickHeader(a, b, 'n')).toThrow(expect.objectContaining({ code: 'ECORRUPT', field: 'header' }));
  });

  it('equal sequence numbers: identical headers are fine, different ones corrupt', () => {
    const a = serializeHeader(header(4n));
    expect(pickHeader(a, a.slice(), 'n').index).toBe(0);
    const other = header(4n);
    other.logLength = 2 << 20;
    expect(() => pickHeader(a, serializeHeader(other), 'n')).toThrow(expect.objectContaining({ code: 'ECORRUPT', field: 'sequence_number' }));
  });
});

describe('vhdx: BAT geometry', () => {
  it('a sector bitmap entry follows every chunk ratio payload entries', () => {
    // 1 MiB blocks, 512-byte sectors: chunk ratio 2^23 * 512 / 2^20 = 4096
    const g = batGeometry(8192 * 2 ** 20, 2 ** 20, 512, false);
    expect(g.chunkRatio).toBe(4096);
    expect(batIndex(g, 4095)).toBe(4095);
    expect(batIndex(g, 4096)).toBe(4097);
    expect(g.entries).toBe(8192 + 1); // the last chunk's bitmap entry is not counted without a parent
    expect(batGeometry(8192 * 2 ** 20, 2 ** 20, 512, true).entries).toBe(2 * 4097);
  });

  it('entries keep their offset and state', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 30 }), fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 99 }), (mib, state, block) => {
        const g = batGeometry(100 * 2 ** 20, 2 ** 20, 512, false);
        const bat = new Bat(g, new Uint8Array(g.entries * 8));
        bat.set(block, state, mib * 2 ** 20);
        return bat.state(block) === state && bat.fileOffset(block) === mib * 2 ** 20;
      }),
    );
  });

  it('create picks block sizes and places regions as QEMU does', () => {
    expect(autoBlockSize(100 * 2 ** 20)).toBe(8 * 2 ** 20);
    expect(autoBlockSize(2 * 2 ** 30)).toBe(16 * 2 ** 20);
    expect(autoBlockSize(200 * 2 ** 30)).toBe(32 * 2 ** 20);
    expect(autoBlockSize(33 * 2 ** 40)).toBe(64 * 2 ** 20);
    const l = createLayout(100 * 2 ** 20, 8 * 2 ** 20, 2 ** 20);
    expect([l.batOffset, l.batLength, l.metadataOffset, l.dataOffset]).toEqual([2, 1, 3, 8].map((m) => m * 2 ** 20));
  });
});

describe('vhdx: log', () => {
  const guid = new Uint8Array(16).fill(7);
  const sector = (fill: number) => new Uint8Array(4096).fill(fill);
  const entry = (sequence: bigint, fill: number) =>
    buildLogEntry({ sequence, logGuid: guid, changes: [{ fileOffset: 3 << 20, data: sector(fill) }, { fileOffset: 4 << 20, zeroLength: 8192 }], flushedFileOffset: 8 << 20, lastFileOffset: 8 << 20 });

  it('an entry built from the spec parses back into its writes', () => {
    const log = new Uint8Array(1 << 20);
    log.set(entry(5n, 0xaa), 0);
    const e = parseLogEntry(log, 0, guid)!;
    expect(e.sequence).toBe(5n);
    expect(e.writes[0]).toEqual({ fileOffset: 3 << 20, data: sector(0xaa) });
    expect(e.writes[1]).toEqual({ fileOffset: 4 << 20, zeroLength: 8192 });
    expect(parseLogEntry(log, 0, new Uint8Array(16).fill(8))).toBeUndefined(); // another log GUID
  });

  it('the active sequence is the chain with the highest sequence number; broken entries end a chain', () => {
    const log = new Uint8Array(1 << 20);
    const a = entry(10n, 1);
    log.set(a, 0);
    log.set(entry(11n, 2), a.length);
    log.set(entry(3n, 3), 64 * 4096);
    expect(findActiveSequence(log, guid).map((e) => e.sequence)).toEqual([10n, 11n]);
    log[a.length + 100] ^= 1; // the second entry's checksum fails
    expect(findActiveSequence(log, guid).map((e) => e.sequence)).toEqual([10n]);
    expect(findActiveSequence(new Uint8Array(1 << 20), guid)).toEqual([]);
  });

  it('a log whose every sector claims a log-long entry is refused quickly, not searched for ever', () => {
    const log = new Uint8Array(4 << 20);
    const v = new DataView(log.buffer);
    for (let at = 0; at < log.length; at += 4096) {
      v.setUint32(at, 0x65676f6c, true); // "loge"
      v.setUint32(at + 8, log.length, true);
      v.setBigUint64(at + 16, 1n, true);
      log.set(guid, at + 32);
    }
    const started = performance.now();
    expect(() => findActiveSequence(log, guid)).toThrow(expect.objectContaining({ code: 'ECORRUPT', field: 'log' }));
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it('an entry that wraps around the end of the log is read across it', () => {
    const log = new Uint8Array(16 * 4096);
    const e = entry(2n, 9); // 2 sectors
    log.set(e.subarray(0, 4096), 15 * 4096);
    log.set(e.subarray(4096), 0);
    const seq = findActiveSequence(log, guid);
    expect(seq.map((x) => x.sequence)).toEqual([2n]);
    expect(seq[0].writes[0]).toEqual({ fileOffset: 3 << 20, data: sector(9) });
  });
});
