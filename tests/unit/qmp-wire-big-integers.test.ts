// Integers past 2^53 on the QMP wire: QEMU reads every int64 exactly; JSON.parse would round them.
import { describe, expect, it } from 'vitest';
import { frame, parseRequest } from '../../src/index.js';

function args(text: string): Record<string, unknown> {
  const r = parseRequest(text);
  if (!('request' in r)) throw new Error(`refused: ${r.error.message}`);
  return r.request.arguments;
}

describe('QMP integers past 2^53', () => {
  it('arrive as exact bigints, wherever they are; safe integers, fractions and strings stay as JSON.parse gives them', () => {
    const a = args('{"execute":"x","arguments":{"speed":4611686018427387905,"n":{"l":[-9223372036854775808,18446744073709551616]},"s":"9223372036854775807","f":1.5,"i":9007199254740991,"e":1e300}}');
    expect(a.speed).toBe(4611686018427387905n);
    expect(a.n).toEqual({ l: [-9223372036854775808n, 18446744073709551616n] });
    expect(a.s).toBe('9223372036854775807');
    expect(a.f).toBe(1.5);
    expect(a.i).toBe(9007199254740991);
    expect(a.e).toBe(1e300);
  });

  it('a string a client sends never turns into a bigint', () => {
    const a = args('{"execute":"x","arguments":{"s":"\\u0000bigint:5","t":"bigint-00000000-0000-0000-0000-000000000000:5","n":12345678901234567890}}');
    expect(a.s).toBe('\u0000bigint:5');
    expect(a.t).toBe('bigint-00000000-0000-0000-0000-000000000000:5');
    expect(a.n).toBe(12345678901234567890n);
  });

  it('a duplicate key is still refused when big integers are in the text', () => {
    expect(parseRequest('{"execute":"x","arguments":{"a":12345678901234567890,"a":1}}')).toMatchObject({ error: { message: 'JSON parse error, duplicate key' } });
  });

  it('an id past 2^53 is echoed with all its digits', () => {
    const r = parseRequest('{"execute":"x","id":12345678901234567890}');
    if (!('request' in r)) throw new Error('refused');
    expect(frame({ return: {}, id: r.request.id!.value })).toBe('{"return":{},"id":12345678901234567890}\r\n');
    expect(frame({ return: { a: [1, 'x'] } })).toBe('{"return":{"a":[1,"x"]}}\r\n');
  });
});
