import { describe, expect, it } from 'vitest';
import type { Drive } from '../../src/drive.js';
import * as P from '../../src/drivers/nbd/protocol.js';
import { checkRequest, replyErrorOf } from '../../src/nbd/commands.js';
import type { NbdExport } from '../../src/nbd/export.js';
import { ServerRequest } from '../../src/nbd/request.js';

const SIZE = 1 << 20;
const MAX = 1 << 16;
const rw: NbdExport = { name: 'rw', drive: { length: SIZE, readOnly: false } as unknown as Drive };
const ro: NbdExport = { name: 'ro', drive: { length: SIZE, readOnly: false } as unknown as Drive, readOnly: true };

const req = (type: number, offset: number, length: number, flags = 0) => new ServerRequest(flags, type, 0, 7, offset, length);

/** The NBD error a request is refused with, or null when it may go to the drive. */
function refusal(r: ServerRequest, e: NbdExport = rw, allocation = true): number | null {
  try {
    checkRequest(r, e, MAX, allocation);
    return null;
  } catch (err) {
    return replyErrorOf(err);
  }
}

describe('NBD server request checks (before the drive sees a request)', () => {
  it('lets valid requests through', () => {
    expect(refusal(req(P.NBD_CMD_READ, 0, MAX))).toBeNull();
    expect(refusal(req(P.NBD_CMD_WRITE, SIZE - 512, 512, P.NBD_CMD_FLAG_FUA))).toBeNull();
    expect(refusal(req(P.NBD_CMD_WRITE_ZEROES, 0, SIZE, P.NBD_CMD_FLAG_NO_HOLE | P.NBD_CMD_FLAG_FAST_ZERO))).toBeNull();
    expect(refusal(req(P.NBD_CMD_FLUSH, SIZE * 4, 0))).toBeNull();
    expect(refusal(req(P.NBD_CMD_BLOCK_STATUS, 0, SIZE, P.NBD_CMD_FLAG_REQ_ONE))).toBeNull();
  });

  it("refuses in QEMU's order: unknown command, read-only, bounds, flags, sizes, contexts", () => {
    expect(refusal(req(99, 0, 0))).toBe(P.NBD_EINVAL);
    expect(refusal(req(P.NBD_CMD_WRITE, SIZE, 512), ro)).toBe(P.NBD_EPERM);
    expect(refusal(req(P.NBD_CMD_TRIM, 0, 512), ro)).toBe(P.NBD_EPERM);
    expect(refusal(req(P.NBD_CMD_READ, 0, 512), ro)).toBeNull();
    expect(refusal(req(P.NBD_CMD_WRITE, SIZE, 512))).toBe(P.NBD_ENOSPC);
    expect(refusal(req(P.NBD_CMD_WRITE_ZEROES, SIZE - 1, 2))).toBe(P.NBD_ENOSPC);
    expect(refusal(req(P.NBD_CMD_READ, SIZE - 1, 2))).toBe(P.NBD_EINVAL);
    expect(refusal(req(P.NBD_CMD_READ, 0, 512, P.NBD_CMD_FLAG_REQ_ONE))).toBe(P.NBD_EINVAL);
    expect(refusal(req(P.NBD_CMD_READ, 0, MAX + 1))).toBe(P.NBD_EINVAL);
    expect(refusal(req(P.NBD_CMD_BLOCK_STATUS, 0, 512), rw, false)).toBe(P.NBD_EINVAL);
    expect(refusal(req(P.NBD_CMD_BLOCK_STATUS, 0, 0))).toBe(P.NBD_EINVAL);
  });
});
