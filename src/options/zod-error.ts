import type { z } from 'zod';
import { BlockError } from '../errors.js';

/** Joins a zod issue path into the dotted field name users wrote (`file.filename`). */
function fieldOf(prefix: string, path: readonly PropertyKey[]): string {
  const parts = [prefix, ...path.map(String)].filter((p) => p !== '');
  return parts.join('.');
}

/** Turns the first zod issue into an `EINVAL` BlockError whose message names the field. */
export function zodToBlockError(error: z.ZodError, prefix = '', what = 'invalid options'): BlockError {
  const issue = error.issues[0];
  if (!issue) return new BlockError('EINVAL', what);
  const field = fieldOf(prefix, issue.path);
  let detail = issue.message;
  if (issue.code === 'invalid_type' && /received undefined/.test(issue.message)) detail = 'required';
  if (issue.code === 'unrecognized_keys') {
    const keys = (issue as { keys?: string[] }).keys ?? [];
    const names = keys.map((k) => fieldOf(field, [k]));
    return new BlockError('EINVAL', `${names.join(', ')}: unknown option`, { field: names[0] });
  }
  return new BlockError('EINVAL', `${field || '(options)'}: ${detail}`, { field });
}

/** Parses `input` with `schema`, throwing a BlockError naming the field on failure. */
export function parseOptions<S extends z.ZodType>(schema: S, input: unknown, prefix = ''): z.output<S> {
  const result = schema.safeParse(input);
  if (!result.success) throw zodToBlockError(result.error, prefix);
  return result.data;
}
