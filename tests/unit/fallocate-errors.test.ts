import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { preallocationError } from '../../src/tools/create.js';
import { errnoName, errnoText, fallocateErrorCode } from '../../src/drivers/file/fallocate.js';

const E = os.constants.errno;

describe('posix_fallocate error numbers map to their own code (preallocation=falloc)', () => {
  it.each([
    ['ENOSPC', E.ENOSPC, 'ENOSPC'],
    ['EDQUOT', E.EDQUOT, 'ENOSPC'],
    ['EFBIG', E.EFBIG, 'EFBIG'],
    ['EIO', E.EIO, 'EIO'],
    ['EBADF', E.EBADF, 'EBADF'],
    ['EINVAL', E.EINVAL, 'EINVAL'],
    ['EINTR', E.EINTR, 'EIO'],
    ['EOPNOTSUPP', E.EOPNOTSUPP, 'ENOTSUP'],
    ['ENOSYS', E.ENOSYS, 'ENOTSUP'],
  ] as const)('%s (%i) is %s', (name, errno, code) => {
    // On Linux EOPNOTSUPP and ENOTSUP are one number: either name will do.
    expect(name === 'EOPNOTSUPP' ? ['EOPNOTSUPP', 'ENOTSUP'] : [name]).toContain(errnoName(errno));
    expect(fallocateErrorCode(errno)).toBe(code);
    const e = preallocationError(errno, '/x/img');
    expect(e).toMatchObject({ name: 'BlockError', code, field: 'preallocation', path: '/x/img' });
    if (code === 'ENOTSUP') expect(e.message).toMatch(/with fallocate \(use preallocation=full\)$/);
    else expect(e.message).toBe(`preallocation: could not reserve space in '/x/img': ${errnoText(errno)}`);
  });

  it('a full disk says so in words, as qemu-img does ("No space left on device"), with the errno name', () => {
    expect(preallocationError(E.ENOSPC, 'img').message).toBe("preallocation: could not reserve space in 'img': no space left on device (ENOSPC)");
  });

  it('an error number the platform does not name is EIO, shown as its number', () => {
    expect(fallocateErrorCode(99999)).toBe('EIO');
    expect(errnoName(99999)).toBe('E99999');
    expect(preallocationError(99999, 'img').message).toBe("preallocation: could not reserve space in 'img': error 99999");
  });
});
