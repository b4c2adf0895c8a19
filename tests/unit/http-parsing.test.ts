import { describe, expect, it } from 'vitest';
import { credentialsToHeader, displayUrl } from '../../src/drivers/http/client.js';
import {
  acceptsByteRanges,
  compareValidators,
  ifRangeValue,
  isStrongEtag,
  parseContentLength,
  parseContentRange,
  validatorsOf,
} from '../../src/drivers/http/headers.js';
import { ReadaheadCache, ReadaheadReader } from '../../src/drivers/http/readahead.js';
import { backoffDelay, isRetryableStatus } from '../../src/drivers/http/retry.js';

describe('http header parsing', () => {
  it('Content-Range', () => {
    expect(parseContentRange('bytes 0-0/1234')).toEqual({ first: 0, last: 0, size: 1234 });
    expect(parseContentRange('bytes 100-199/*')).toEqual({ first: 100, last: 199, size: undefined });
    expect(parseContentRange('BYTES  5-9/10 ')).toEqual({ first: 5, last: 9, size: 10 });
    expect(parseContentRange('bytes */0')).toEqual({ unsatisfied: true, size: 0 });
    for (const bad of [null, '', 'bytes 9-5/10', 'bytes 5-10/10', 'bytes 1-2', 'items 0-1/2', 'bytes -1-2/3', 'bytes */*', 'bytes 0-1/99999999999999999999']) {
      expect(parseContentRange(bad)).toBeUndefined();
    }
  });

  it('Content-Length and Accept-Ranges', () => {
    expect(parseContentLength('42')).toBe(42);
    expect(parseContentLength(' 0 ')).toBe(0);
    expect(parseContentLength('-1')).toBeUndefined();
    expect(parseContentLength('1e3')).toBeUndefined();
    expect(parseContentLength(null)).toBeUndefined();
    expect(acceptsByteRanges('bytes')).toBe(true);
    expect(acceptsByteRanges('none, Bytes')).toBe(true);
    expect(acceptsByteRanges('none')).toBe(false);
    expect(acceptsByteRanges(null)).toBe(false);
  });

  it('validators: strong ETags go in If-Range, weak ones give way to Last-Modified', () => {
    expect(isStrongEtag('"abc"')).toBe(true);
    expect(isStrongEtag('W/"abc"')).toBe(false);
    expect(ifRangeValue({ etag: '"a"', lastModified: 'X' })).toBe('"a"');
    expect(ifRangeValue({ etag: 'W/"a"', lastModified: 'X' })).toBe('X');
    expect(ifRangeValue({ etag: 'W/"a"' })).toBeUndefined();
    expect(validatorsOf(new Headers({ ETag: ' "x" ', 'Last-Modified': 'D' }))).toEqual({ etag: '"x"', lastModified: 'D' });
    expect(compareValidators({ etag: '"a"' }, { etag: '"b"' })).toBe('changed');
    expect(compareValidators({ etag: '"a"', lastModified: 'D' }, { lastModified: 'E' })).toBe('changed');
    expect(compareValidators({ etag: '"a"' }, {})).toBe('same');
    expect(compareValidators({ etag: '"a"' }, { etag: '"a"', lastModified: 'E' })).toBe('same');
  });

  it('URLs: credentials become a Basic header, messages hide them and the query', () => {
    const h: Record<string, string> = {};
    expect(credentialsToHeader('http://us%C3%A9r:p%40ss@host/x.img', h)).toBe('http://host/x.img');
    expect(h.Authorization).toBe(`Basic ${Buffer.from('usér:p@ss').toString('base64')}`);
    const given = { authorization: 'Bearer t' };
    credentialsToHeader('http://u:p@host/x', given);
    expect(given).toEqual({ authorization: 'Bearer t' });
    expect(displayUrl('https://u:p@host:8443/a/b.qcow2?sig=secret')).toBe('https://host:8443/a/b.qcow2?…');
  });
});

describe('http retry policy', () => {
  it('retries 5xx, 408 and 429 only', () => {
    for (const s of [500, 502, 503, 504, 408, 429]) expect(isRetryableStatus(s)).toBe(true);
    for (const s of [400, 401, 403, 404, 412, 416]) expect(isRetryableStatus(s)).toBe(false);
  });
  it('backs off exponentially, capped', () => {
    expect([1, 2, 3, 4].map((a) => backoffDelay(a, 100))).toEqual([100, 200, 400, 800]);
    expect(backoffDelay(30, 100)).toBe(10_000);
  });
});

describe('read-ahead cache', () => {
  const entry = (offset: number, length: number) => ({ offset, length, data: Promise.resolve(new Uint8Array(length)) });
  it('finds a range holding the whole read, evicting the least recently used', () => {
    const c = new ReadaheadCache(2);
    const a = entry(0, 100);
    const b = entry(100, 100);
    c.add(a);
    c.add(b);
    expect(c.find(10, 90)).toBe(a);
    expect(c.find(90, 20)).toBeUndefined();
    c.add(entry(500, 10)); // evicts b: a was used more recently
    expect(c.find(100, 1)).toBeUndefined();
    expect(c.find(0, 1)).toBe(a);
    c.remove(a);
    expect(c.find(0, 1)).toBeUndefined();
  });
});

describe('read-ahead reader', () => {
  const SIZE = 10 * 65536 + 100;
  const file = Uint8Array.from({ length: SIZE }, (_, i) => (i * 7) & 255);
  /** A fake remote file that records every range asked for. */
  const remote = () => {
    const asked: [number, number][] = [];
    const fetchRange = async (offset: number, buffer: Uint8Array) => {
      asked.push([offset, buffer.length]);
      buffer.set(file.subarray(offset, offset + buffer.length));
    };
    return { asked, fetchRange };
  };
  const readAll = async (r: ReadaheadReader, ranges: [number, number][]) => {
    for (const [o, l] of ranges) {
      const b = new Uint8Array(l);
      await r.read(o, b);
      expect(b).toEqual(file.subarray(o, o + l));
    }
  };

  it('small sequential reads: one request per window, the last window clipped at the end', async () => {
    const f = remote();
    const r = new ReadaheadReader(f.fetchRange, SIZE, 65536);
    await readAll(r, Array.from({ length: Math.ceil(SIZE / 4096) }, (_, i): [number, number] => [i * 4096, Math.min(4096, SIZE - i * 4096)]));
    expect(f.asked).toEqual([...Array.from({ length: 10 }, (_, i): [number, number] => [i * 65536, 65536]), [655360, 100]]);
  });

  it('large sequential reads prefetch the next range: one request per read plus at most one', async () => {
    const f = remote();
    const r = new ReadaheadReader(f.fetchRange, SIZE, 4096);
    await readAll(r, Array.from({ length: 10 }, (_, i): [number, number] => [i * 65536, 65536]));
    expect(f.asked.length).toBeLessThanOrEqual(11);
    expect(new Set(f.asked.map(([o]) => o)).size).toBe(f.asked.length);
  });

  it('a stream of large sequential reads reuses its prefetch buffers once read whole, data still right', async () => {
    const buffers = new Set<Uint8Array>();
    const f = remote();
    const r = new ReadaheadReader(
      async (o, b) => {
        buffers.add(b);
        await f.fetchRange(o, b);
      },
      SIZE,
      4096,
    );
    // The caller's buffers are fresh each time (readAll); only the prefetched ones can repeat.
    await readAll(r, Array.from({ length: 10 }, (_, i): [number, number] => [i * 65536, 65536]));
    expect(f.asked.length).toBeLessThanOrEqual(11);
    // Two read straight into the caller's buffers, then prefetches alternate between two buffers (a new one each time without reuse).
    expect(buffers.size).toBeLessThanOrEqual(5);
    // A second pass over the same ranges (re-reads) is still byte-identical.
    await readAll(r, Array.from({ length: 10 }, (_, i): [number, number] => [i * 65536, 65536]));
  });

  it('a prefetched range two reads wait for is not reused before both have copied it', async () => {
    const f = remote();
    const r = new ReadaheadReader(f.fetchRange, SIZE, 4096);
    await readAll(r, [[0, 65536]]);
    await readAll(r, [[65536, 65536]]);
    // [131072, +65536) is being prefetched: two concurrent readers of it, then the stream goes on.
    const a = new Uint8Array(65536);
    const b = new Uint8Array(65536);
    await Promise.all([r.read(131072, a), r.read(131072, b)]);
    await readAll(r, [[196608, 65536], [262144, 65536]]);
    expect(a).toEqual(file.subarray(131072, 196608));
    expect(b).toEqual(file.subarray(131072, 196608));
  });

  it('random large reads and readahead 0 send exactly one request per read', async () => {
    const f = remote();
    await readAll(new ReadaheadReader(f.fetchRange, SIZE, 4096), [[65536 * 3, 8192], [100, 8192], [65536 * 7, 8192]]);
    expect(f.asked).toEqual([[65536 * 3, 8192], [100, 8192], [65536 * 7, 8192]]);
    const g = remote();
    await readAll(new ReadaheadReader(g.fetchRange, SIZE, 0), [[0, 10], [10, 10], [20, 10]]);
    expect(g.asked).toEqual([[0, 10], [10, 10], [20, 10]]);
  });

  it('a failed window is asked for again by the next read', async () => {
    let fail = true;
    const asked: number[] = [];
    const r = new ReadaheadReader(async (o, b) => {
      asked.push(o);
      if (fail) throw new Error('boom');
      b.set(file.subarray(o, o + b.length));
    }, SIZE, 65536);
    await expect(r.read(0, new Uint8Array(10))).rejects.toThrow('boom');
    fail = false;
    await readAll(r, [[0, 10]]);
    expect(asked).toEqual([0, 0]);
  });
});
