/** Pure parsing of the HTTP headers the http driver relies on (RFC 9110 byte ranges and validators). */
import type { HeaderLookup } from './transport.js';

/** A parsed `Content-Range: bytes FIRST-LAST/SIZE` (size undefined for `*`), or the unsatisfied form (`*` for the range, as 416 answers carry). */
export type ContentRange = { first: number; last: number; size: number | undefined } | { unsatisfied: true; size: number };

const DIGITS = /^\d{1,16}$/;

function safeInt(s: string): number | undefined {
  if (!DIGITS.test(s)) return undefined;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Parses a Content-Range header; undefined when it is absent or malformed (last before first, last past size…). */
export function parseContentRange(value: string | null): ContentRange | undefined {
  if (value === null) return undefined;
  const m = /^\s*bytes\s+(\*|(\d+)-(\d+))\/(\*|\d+)\s*$/i.exec(value);
  if (!m) return undefined;
  const size = m[4] === '*' ? undefined : safeInt(m[4]);
  if (m[4] !== '*' && size === undefined) return undefined;
  if (m[1] === '*') return size === undefined ? undefined : { unsatisfied: true, size };
  const first = safeInt(m[2]);
  const last = safeInt(m[3]);
  if (first === undefined || last === undefined || last < first) return undefined;
  if (size !== undefined && last >= size) return undefined;
  return { first, last, size };
}

/** Parses a Content-Length header: a safe non-negative integer, or undefined. */
export function parseContentLength(value: string | null): number | undefined {
  return value === null ? undefined : safeInt(value.trim());
}

/** True if an Accept-Ranges header announces byte ranges (`bytes`, possibly among other units). */
export function acceptsByteRanges(value: string | null): boolean {
  return (value ?? '').split(',').some((unit) => unit.trim().toLowerCase() === 'bytes');
}

/** True for a strong entity tag (`"abc"`); weak ones (`W/"abc"`) may not be used in If-Range. */
export function isStrongEtag(etag: string): boolean {
  return /^"[^"]*"$/.test(etag.trim());
}

/** What identifies one version of the remote file: its entity tag and/or modification date. */
export interface Validators {
  etag?: string;
  lastModified?: string;
}

/** The validators an answer carries. */
export function validatorsOf(headers: HeaderLookup): Validators {
  const v: Validators = {};
  const etag = headers.get('etag');
  const lastModified = headers.get('last-modified');
  if (etag !== null && etag.trim() !== '') v.etag = etag.trim();
  if (lastModified !== null && lastModified.trim() !== '') v.lastModified = lastModified.trim();
  return v;
}

/**
 * How an answer's validators compare with those seen at open: `changed` when a validator both
 * carry differs (a new version of the file), `same` otherwise (an answer without them cannot be told apart).
 */
export function compareValidators(opened: Validators, answer: Validators): 'same' | 'changed' {
  if (opened.etag !== undefined && answer.etag !== undefined && opened.etag !== answer.etag) return 'changed';
  if (opened.lastModified !== undefined && answer.lastModified !== undefined && opened.lastModified !== answer.lastModified) return 'changed';
  return 'same';
}

/**
 * The If-Range value for reads (RFC 9110 §13.1.5): the strong ETag, else the Last-Modified date.
 * A server that has a newer version then answers 200 with the whole file instead of 206, which the reader refuses.
 */
export function ifRangeValue(v: Validators): string | undefined {
  if (v.etag !== undefined && isStrongEtag(v.etag)) return v.etag;
  return v.lastModified;
}
