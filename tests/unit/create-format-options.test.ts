import * as z from 'zod';
import { describe, expect, it } from 'vitest';
import { parseFormatO, splitO } from '../../src/cli/create.js';
import { vdiCreateSchema } from '../../src/drivers/vdi/create.js';
import { BlockError } from '../../src/errors.js';
import { parseFormatOptions } from '../../src/options/create.js';

const refusal = (f: () => unknown): BlockError => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(BlockError);
    return e as BlockError;
  }
  throw new Error('expected a refusal');
};

describe('-o lists of any format', () => {
  it('splits k=v pairs in order across repeated -o; a bare key is on', () => {
    expect(splitO(['a=1,b', 'c=x=y,,'])).toEqual([
      ['a', '1'],
      ['b', 'on'],
      ['c', 'x=y'],
    ]);
  });

  it("takes qemu-img's common names apart and leaves the rest to the driver, as strings", () => {
    expect(parseFormatO(['size=2M,static=on', 'backing_file=b.vdi,backing_fmt=vdi,subformat=fixed'])).toEqual({
      size: 2 * 2 ** 20,
      backing: 'b.vdi',
      backingFormat: 'vdi',
      formatOptions: { static: 'on', subformat: 'fixed' },
    });
  });
});

describe('parseFormatOptions', () => {
  const strict = z.object({ flag: z.boolean().default(false), count: z.number().int().optional(), name: z.string().optional() }).strict();

  it("gives a schema that wants booleans and numbers qemu-img's words converted, and strings as they are", () => {
    expect(parseFormatOptions(strict, { flag: 'on', count: '4096', name: '123' })).toEqual({ flag: true, count: 4096, name: '123' });
    expect(parseFormatOptions(strict, { flag: 'off' })).toEqual({ flag: false });
    expect(parseFormatOptions(strict, { flag: true })).toEqual({ flag: true });
  });

  it('refuses an unknown key and a bad value with an EINVAL naming them', () => {
    expect(refusal(() => parseFormatOptions(strict, { flag: 'on', colour: 'red' }))).toMatchObject({ code: 'EINVAL', field: 'colour' });
    expect(refusal(() => parseFormatOptions(strict, { flag: 'maybe' }))).toMatchObject({ code: 'EINVAL', field: 'flag' });
  });

  it("vdi: static takes qemu-img's words and booleans, defaults to off, and nothing else", () => {
    for (const [v, want] of [
      ['on', true],
      ['off', false],
      [true, true],
      ['yes', true],
      ['false', false],
    ] as const)
      expect(parseFormatOptions(vdiCreateSchema, { static: v })).toEqual({ static: want });
    expect(parseFormatOptions(vdiCreateSchema, {})).toEqual({ static: false });
    expect(refusal(() => parseFormatOptions(vdiCreateSchema, { static: 'maybe' })).message).toBe('static: must be on or off');
    expect(refusal(() => parseFormatOptions(vdiCreateSchema, { subformat: 'fixed' }))).toMatchObject({ field: 'subformat' });
  });
});
