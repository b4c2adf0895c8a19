import * as z from 'zod';
import { BlockError } from '../errors.js';
import { builtOnce } from './built-once.js';

const SUFFIX: Record<string, number> = { '': 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50, e: 2 ** 60 };

/** Parses a QEMU-style size: a byte count, or a number with a k/M/G/T/P/E suffix (powers of 1024). */
export function parseSize(input: string | number): number {
  if (typeof input === 'number') return input;
  if (typeof input !== 'string') throw new BlockError('EINVAL', `size: must be a number or a string, got ${input === null ? 'null' : Array.isArray(input) ? 'an array' : typeof input}`, { field: 'size' });
  const m = /^\s*(\d+(?:\.\d+)?)\s*([bkmgtpe]?)(?:i?b)?\s*$/i.exec(input);
  if (!m) return Number.NaN;
  return Math.round(Number(m[1]) * SUFFIX[m[2].toLowerCase()]);
}

/**
 * Zod schema for a byte count: a safe non-negative integer, also given as a string with a suffix
 * ('64M'). Built on first use: a schema costs to build, and a start that parses no size (a CLI
 * verb on an image) should not pay for it.
 */
export const sizeSchema = builtOnce(() =>
  z
    .union([z.number(), z.string()])
    .transform((v) => parseSize(v))
    .pipe(
      z
        .number({ error: 'must be a size in bytes (e.g. 1048576 or "1M")' })
        .int('must be a whole number of bytes')
        .nonnegative('must not be negative')
        .max(Number.MAX_SAFE_INTEGER, 'must be at most 2^53-1 bytes'),
    ),
);
