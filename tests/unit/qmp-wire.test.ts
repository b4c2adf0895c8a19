import { describe, expect, it } from 'vitest';
import { errorResponse, eventMessage, frame, greeting, JsonSplitter, parseRequest, QMP_MAX_NESTING, QmpError, type SplitItem } from '../../src/index.js';

const enc = (s: string) => new TextEncoder().encode(s);
const texts = (items: SplitItem[]) => items.map((i) => ('text' in i ? i.text : `ERR:${i.error.message}`));

describe('JsonSplitter', () => {
  it('splits objects sent back to back without any separator', () => {
    const s = new JsonSplitter();
    expect(texts(s.push(enc('{"execute":"a"}{"execute":"b"}\r\n{"execute":"c"}')))).toEqual([
      '{"execute":"a"}',
      '{"execute":"b"}',
      '{"execute":"c"}',
    ]);
    expect(s.pending).toBe(false);
    expect(s.buffered).toBe(0);
  });

  it('yields the same texts whatever byte the input is split at (including inside a UTF-8 sequence)', () => {
    const input = '{"execute":"x","arguments":{"s":"é}{\\"[","a":[1,{"b":2}]},"id":"ü"} {"execute":"y"}';
    const bytes = enc(input);
    const expected = ['{"execute":"x","arguments":{"s":"é}{\\"[","a":[1,{"b":2}]},"id":"ü"}', '{"execute":"y"}'];
    for (let cut = 0; cut <= bytes.length; cut++) {
      const s = new JsonSplitter();
      const out = [...s.push(bytes.subarray(0, cut)), ...s.push(bytes.subarray(cut))];
      expect(texts(out), `cut at ${cut}`).toEqual(expected);
    }
    // and one byte at a time
    const s = new JsonSplitter();
    const out: SplitItem[] = [];
    for (const b of bytes) out.push(...s.push(Uint8Array.of(b)));
    expect(texts(out)).toEqual(expected);
  });

  it('does not count braces inside strings, nor a quote after a backslash, nor a backslash after a backslash', () => {
    const s = new JsonSplitter();
    const a = '{"k":"}}}\\"{{"}';
    const b = '{"k":"\\\\"}';
    expect(texts(s.push(enc(a + b)))).toEqual([a, b]);
    expect(JSON.parse(a)).toEqual({ k: '}}}"{{' });
    expect(JSON.parse(b)).toEqual({ k: '\\' });
  });

  it('keeps a copy of buffered bytes: the caller may reuse its chunk', () => {
    const s = new JsonSplitter();
    const chunk = enc('{"execute":');
    expect(s.push(chunk)).toEqual([]);
    chunk.fill(0x20);
    expect(texts(s.push(enc('"q"}')))).toEqual(['{"execute":"q"}']);
  });

  it('yields top-level scalars and stray closers as texts of their own (the parser refuses them)', () => {
    const s = new JsonSplitter();
    expect(texts(s.push(enc('42 "str"}true{"a":1}')))).toEqual(['42', '"str"', '}', 'true', '{"a":1}']);
    // a scalar at the end of the input waits for its delimiter
    expect(s.push(enc('123'))).toEqual([]);
    expect(texts(s.push(enc('\n')))).toEqual(['123']);
  });

  it('refuses a text larger than the limit with one error, skips the rest of it, and reads the next one', () => {
    const s = new JsonSplitter(64);
    const big = `{"execute":"x","arguments":{"pad":"${'a'.repeat(200)}"}}`;
    const out = [...s.push(enc(big.slice(0, 100))), ...s.push(enc(big.slice(100))), ...s.push(enc('{"execute":"ok"}'))];
    expect(texts(out)).toEqual(['ERR:JSON parse error, input larger than 64 bytes', '{"execute":"ok"}']);
    expect(out[0]).toMatchObject({ error: { errorClass: 'GenericError' } });
  });

  it('never buffers more than the limit plus one chunk, even for a text that never ends', () => {
    const s = new JsonSplitter(1024);
    s.push(enc('{"a":"'));
    for (let i = 0; i < 100; i++) {
      expect(s.push(enc('x'.repeat(500)))).toEqual([]);
      expect(s.buffered).toBeLessThanOrEqual(1024 + 500);
    }
    expect(s.buffered).toBe(0);
    expect(texts(s.push(enc('"}{"b":1}')))).toEqual(['ERR:JSON parse error, input larger than 1024 bytes', '{"b":1}']);
  });

  it('refuses nesting deeper than the limit', () => {
    const s = new JsonSplitter(1 << 20);
    const deep = `${'['.repeat(QMP_MAX_NESTING + 1)}${']'.repeat(QMP_MAX_NESTING + 1)}`;
    expect(texts(s.push(enc(`${deep}[1]`)))).toEqual([`ERR:JSON parse error, nesting deeper than ${QMP_MAX_NESTING} levels`, '[1]']);
  });

  it('reports invalid UTF-8 as a parse error', () => {
    const s = new JsonSplitter();
    const out = s.push(Uint8Array.of(0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d));
    expect(texts(out)).toEqual(['ERR:JSON parse error, invalid UTF-8 sequence']);
  });
});

describe('parseRequest', () => {
  const err = (text: string) => {
    const r = parseRequest(text);
    if (!('error' in r)) throw new Error('expected an error');
    return { class: r.error.errorClass, desc: r.error.message, id: r.id };
  };

  it('accepts execute, arguments and id (any JSON value, null included)', () => {
    expect(parseRequest('{"execute":"query-block","arguments":{"a":1},"id":null}')).toEqual({
      request: { execute: 'query-block', arguments: { a: 1 }, id: { value: null } },
    });
    expect(parseRequest('{"execute":"x"}')).toEqual({ request: { execute: 'x', arguments: {} } });
  });

  it("refuses malformed JSON, non-objects, missing or ill-typed members with QEMU's messages, keeping the id", () => {
    expect(err('{"execute":')).toMatchObject({ class: 'GenericError', desc: expect.stringMatching(/^JSON parse error, /) });
    expect(err('[1]')).toEqual({ class: 'GenericError', desc: 'QMP input must be a JSON object', id: undefined });
    expect(err('{"id":7}')).toEqual({ class: 'GenericError', desc: "QMP input lacks member 'execute'", id: { value: 7 } });
    expect(err('{"execute":1}').desc).toBe("QMP input member 'execute' must be a string");
    expect(err('{"execute":"x","arguments":[]}').desc).toBe("QMP input member 'arguments' must be an object");
    expect(err('{"execute":"x","exec-oob":"y","id":"a"}')).toEqual({ class: 'GenericError', desc: "QMP input member 'exec-oob' is unexpected", id: { value: 'a' } });
  });
});

describe('framing', () => {
  it('ends every message with CRLF and echoes the id', () => {
    expect(frame({ return: {} })).toBe('{"return":{}}\r\n');
    expect(errorResponse(new QmpError('DeviceNotFound', "Device 'x' not found"), { value: 'a' })).toEqual({
      error: { class: 'DeviceNotFound', desc: "Device 'x' not found" },
      id: 'a',
    });
  });

  it('greets with a version and no capabilities', () => {
    expect(greeting()).toEqual({ QMP: { version: { qemu: { major: 0, minor: 1, micro: 0 }, package: expect.stringMatching(/^blocklayer /) }, capabilities: [] } });
  });

  it('stamps events with seconds and microseconds', () => {
    expect(eventMessage('X', { a: 1 }, 1_700_000_000_123_456)).toEqual({ event: 'X', data: { a: 1 }, timestamp: { seconds: 1_700_000_000, microseconds: 123_456 } });
  });
});
