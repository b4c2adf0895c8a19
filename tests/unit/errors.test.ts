import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { BlockError, type BlockErrorCode, codeForErrno, fromErrno, valueText } from '../../src/errors.js';

/** An error shaped like the ones Node.js fs calls reject with. */
function errnoError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: something failed, open '/some/path'`), { code });
}

// Each errno maps to its own code, or to the one code of its kind; never a catch-all EIO.
const TABLE: [errno: string, code: BlockErrorCode][] = [
  ['EIO', 'EIO'],
  ['ENOENT', 'ENOENT'],
  ['EACCES', 'EACCES'],
  ['EPERM', 'EACCES'],
  ['EROFS', 'EROFS'],
  ['ENOSPC', 'ENOSPC'],
  ['EDQUOT', 'ENOSPC'],
  ['EINVAL', 'EINVAL'],
  ['ESPIPE', 'EINVAL'],
  ['ENOTSUP', 'ENOTSUP'],
  ['EOPNOTSUPP', 'ENOTSUP'],
  ['ENOSYS', 'ENOTSUP'],
  ['ENOTTY', 'ENOTSUP'],
  ['ENOLCK', 'ENOTSUP'],
  ['EAGAIN', 'ELOCKED'],
  ['EWOULDBLOCK', 'ELOCKED'],
  ['EBUSY', 'EBUSY'],
  ['ETXTBSY', 'EBUSY'],
  ['EADDRINUSE', 'EBUSY'],
  ['ECANCELED', 'ECANCELED'],
  ['EISDIR', 'EISDIR'],
  ['ENOTDIR', 'ENOTDIR'],
  ['ELOOP', 'ELOOP'],
  ['ENAMETOOLONG', 'ENAMETOOLONG'],
  ['EMFILE', 'EMFILE'],
  ['ENFILE', 'EMFILE'],
  ['EFBIG', 'EFBIG'],
  ['EOVERFLOW', 'EFBIG'],
  ['EEXIST', 'EEXIST'],
  ['ENXIO', 'ENXIO'],
  ['ENODEV', 'ENXIO'],
  ['EBADF', 'EBADF'],
  ['ENOMEM', 'ENOMEM'],
  ['ENOBUFS', 'ENOMEM'],
];

describe('errno to BlockError code', () => {
  it.each(TABLE)('%s becomes %s', (errno, code) => {
    expect(codeForErrno(errno)).toBe(code);
    const e = fromErrno(errnoError(errno), 'could not open', { path: '/some/path', field: 'filename' });
    expect(e).toBeInstanceOf(BlockError);
    expect(e).toMatchObject({ code, path: '/some/path', field: 'filename' });
  });

  it('every errno in the table is one this platform knows', () => {
    const known = new Set(Object.keys(os.constants.errno));
    expect(TABLE.map(([errno]) => errno).filter((errno) => !known.has(errno))).toEqual([]);
  });

  it('an errno the table does not know, or an error without one, becomes EIO', () => {
    expect(codeForErrno('ESTALE')).toBe('EIO');
    expect(fromErrno(errnoError('ESTALE'), 'read').code).toBe('EIO');
    expect(fromErrno(new Error('no errno'), 'read').code).toBe('EIO');
    expect(fromErrno('a string', 'read').code).toBe('EIO');
  });

  it('names inherited from Object.prototype are not errnos', () => {
    expect(codeForErrno('toString')).toBe('EIO');
    expect(codeForErrno('constructor')).toBe('EIO');
    expect(codeForErrno('__proto__')).toBe('EIO');
  });

  it('the message says what failed and why, and the cause is kept', () => {
    const cause = errnoError('ELOOP');
    const e = fromErrno(cause, "could not open '/a'", { node: 'n1', offset: 4096 });
    expect(e.message).toBe("could not open '/a': ELOOP: something failed, open '/some/path'");
    expect(e.cause).toBe(cause);
    expect(e).toMatchObject({ node: 'n1', offset: 4096 });
  });

  it('a BlockError passes through unchanged', () => {
    const original = new BlockError('ECORRUPT', 'bad L2 table', { offset: 512 });
    expect(fromErrno(original, 'read')).toBe(original);
  });
});

describe('valueText: a value in a message as the caller gave it', () => {
  it('integers past 2^53 keep every digit (not 9223372036854776000, not clamped to 9007199254740991)', () => {
    expect(valueText(2 ** 63)).toBe('9223372036854775808');
    expect(valueText(2 ** 53)).toBe('9007199254740992');
    expect(valueText(-(2 ** 64))).toBe('-18446744073709551616');
    expect(valueText(2n ** 63n + 1n)).toBe('9223372036854775809');
  });

  it('other values as they are, never throwing', () => {
    expect([5, -5, 0.5, Number.NaN, Number.POSITIVE_INFINITY, Number.MAX_SAFE_INTEGER].map(valueText)).toEqual(['5', '-5', '0.5', 'NaN', 'Infinity', '9007199254740991']);
    expect([undefined, null, true, '12', [1], {}, Symbol('s'), () => 1].map(valueText)).toEqual(['undefined', 'null', 'true', '"12"', '(an array)', '(an object)', '(a symbol)', '(a function)']);
    const hostile = { toString: () => { throw new Error('no'); } };
    expect(valueText(hostile)).toBe('(an object)');
  });
});
