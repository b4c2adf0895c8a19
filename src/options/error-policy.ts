/**
 * Error policies (QEMU `rerror` / `werror`): what a drive does when a request fails.
 *
 * - `report`: the request fails with the error (the guest sees an I/O error);
 * - `ignore`: the error is dropped and the request reported as done;
 * - `stop`: the drive pauses (requests are held) until resumed;
 * - `enospc`: `stop` on ENOSPC, `report` on any other error. Writes only: QEMU's -drive parser
 *   refuses it for reads (`'enospc' invalid read error action`).
 *
 * Spellings: the -drive keys `rerror=`/`werror=` take the four names above, case-sensitive
 * (blockdev.c parse_block_error_action). QMP's BlockdevOnError (device properties `rerror`,
 * `werror`) adds `auto`, "inherit the backend's policy"; a -drive backend's policy defaults to
 * `report` for reads and `enospc` for writes, so `auto` means those here.
 */
import * as z from 'zod';
import { BlockError } from '../errors.js';
import { expectString } from './input.js';

/** An error policy (QEMU BlockdevOnError without `auto`). */
export const errorActionSchema = z.enum(['report', 'ignore', 'stop', 'enospc']);
/** An error policy: `report`, `ignore`, `stop` or `enospc`. */
export type ErrorAction = z.infer<typeof errorActionSchema>;

/** An error policy for reads: no `enospc` (QEMU refuses it for reads). */
export const readErrorActionSchema = errorActionSchema.exclude(['enospc']);
/** An error policy for reads: `report`, `ignore` or `stop`. */
export type ReadErrorAction = z.infer<typeof readErrorActionSchema>;

/** Which requests a policy applies to: `read` (rerror) or `write` (werror). */
export type ErrorDirection = 'read' | 'write';

/** What QMP's `auto` stands for: a -drive backend's defaults (blockdev.c: rerror=report, werror=enospc). */
export const AUTO_ERROR_ACTION: Readonly<{
  /** `rerror=auto`: report. */
  read: ReadErrorAction;
  /** `werror=auto`: enospc. */
  write: ErrorAction;
}> = { read: 'report', write: 'enospc' };

function checkDirection(direction: unknown): void {
  if (direction !== 'read' && direction !== 'write') {
    throw new BlockError('EINVAL', `direction: must be 'read' or 'write', got ${JSON.stringify(direction) ?? String(direction)}`, { field: 'direction' });
  }
}

/** QEMU's message for a policy it does not know in this direction. */
function invalidAction(value: string, direction: ErrorDirection, field: string): BlockError {
  return new BlockError('EINVAL', `'${value}' invalid ${direction} error action`, { field });
}

/**
 * A -drive `rerror=`/`werror=` value (no `auto`, which QEMU's -drive refuses too). EINVAL
 * with QEMU's message (`'enospc' invalid read error action`) naming `field` otherwise.
 */
export function parseDriveErrorAction(value: string, direction: ErrorDirection, field = direction === 'read' ? 'rerror' : 'werror'): ErrorAction {
  checkDirection(direction);
  expectString(value, field);
  const schema = direction === 'read' ? readErrorActionSchema : errorActionSchema;
  const r = schema.safeParse(value);
  if (!r.success) throw invalidAction(value, direction, field);
  return r.data;
}

/**
 * A QMP BlockdevOnError value (`report`, `ignore`, `stop`, `enospc`, `auto`) as the policy to
 * apply for `direction`: `auto` becomes the default (`report` for reads, `enospc` for
 * writes). Unknown values get QAPI's message (`Parameter 'werror' does not accept value 'x'`);
 * `enospc` is refused for reads with the -drive parser's message (QEMU's devices accept it
 * there, where it can only ever act as `report`); a non-string gets QMP's type message. Every
 * refusal is EINVAL naming `field`.
 */
export function parseErrorAction(value: unknown, direction: ErrorDirection, field = direction === 'read' ? 'rerror' : 'werror'): ErrorAction {
  checkDirection(direction);
  if (typeof value !== 'string') throw new BlockError('EINVAL', `Invalid parameter type for '${field}', expected: string`, { field });
  if (value === 'auto') return AUTO_ERROR_ACTION[direction];
  if (!errorActionSchema.safeParse(value).success) throw new BlockError('EINVAL', `Parameter '${field}' does not accept value '${value}'`, { field });
  return parseDriveErrorAction(value, direction, field);
}
