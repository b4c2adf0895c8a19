/**
 * The QMP wire format (QEMU's docs/interop/qmp-spec.rst), as pure functions: the greeting,
 * splitting a byte stream into JSON texts, checking a request's members, and framing
 * responses, errors and events. No I/O here; the server sits on top.
 */

/** Version the greeting announces: blocklayer's own, not a QEMU version. */
export const QMP_VERSION = { major: 0, minor: 1, micro: 0 } as const;
/** The greeting's `package` string. */
export const QMP_PACKAGE = 'blocklayer 0.1.0';
/** Default cap on one JSON text's size in bytes (QEMU allows 64 MiB; commands are tiny). */
export const QMP_MAX_MESSAGE_BYTES = 1 << 20;
/** Deepest nesting of objects and arrays accepted (QEMU's MAX_NESTING). */
export const QMP_MAX_NESTING = 1024;

/** Error classes QMP reports (QAPI's QapiErrorClass, the ones this server uses). */
export type QmpErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotFound' | 'DeviceNotActive';

/** An error a command or the dispatcher answers with: a class and a human-readable `desc`. */
export class QmpError extends Error {
  /** Always `QmpError`. */
  override readonly name = 'QmpError';
  constructor(
    /** The QMP error class (`class` in the response). */
    readonly errorClass: QmpErrorClass,
    desc: string,
  ) {
    super(desc);
  }
}

/** The greeting a server sends first: version and (no) capabilities. */
export function greeting(version: { major: number; minor: number; micro: number } = QMP_VERSION, pkg: string = QMP_PACKAGE): Record<string, unknown> {
  return { QMP: { version: { qemu: { major: version.major, minor: version.minor, micro: version.micro }, package: pkg }, capabilities: [] } };
}

/** One message out: a JSON text and QMP's `\r\n` terminator. A bigint (an id echoed as sent) is written with all its digits. */
export function frame(message: unknown): string {
  try {
    return `${JSON.stringify(message)}\r\n`;
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
    // JSON.stringify refuses bigints: each goes out as a marked string, then as its digits.
    const mark = bigIntegerMark();
    const text = JSON.stringify(message, (_key, v: unknown) => (typeof v === 'bigint' ? `${mark}${v}` : v));
    return `${text.replace(new RegExp(`"${mark}(-?\\d+)"`, 'g'), '$1')}\r\n`;
  }
}

/** A prefix no client can predict, for a bigint's stand-in string while JSON.parse or JSON.stringify run. */
function bigIntegerMark(): string {
  return `bigint-${globalThis.crypto.randomUUID()}:`;
}

/** A success response; `id` is echoed when the request had one. */
export function successResponse(ret: unknown, id?: { value: unknown }): Record<string, unknown> {
  return id === undefined ? { return: ret } : { return: ret, id: id.value };
}

/** An error response; `id` is echoed when the request had one. */
export function errorResponse(error: QmpError, id?: { value: unknown }): Record<string, unknown> {
  const body = { error: { class: error.errorClass, desc: error.message } };
  return id === undefined ? body : { ...body, id: id.value };
}

/** An asynchronous event with its wall-clock timestamp (`epochMicros`: microseconds since the epoch). */
export function eventMessage(event: string, data: Record<string, unknown> | undefined, epochMicros: number): Record<string, unknown> {
  const us = Math.max(0, Math.floor(epochMicros));
  const timestamp = { seconds: Math.floor(us / 1e6), microseconds: us % 1e6 };
  return data === undefined ? { event, timestamp } : { event, data, timestamp };
}

/** What the splitter yields: a complete JSON text, or why some input was dropped. */
export type SplitItem =
  | {
      /** One complete JSON text. */
      text: string;
    }
  | {
      /** Why a text was dropped (too large or nested too deep). */
      error: QmpError;
    };

const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function isSpace(b: number): boolean {
  return b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
}

/**
 * Splits a byte stream into JSON texts as they complete, like QEMU's JSON streamer: objects
 * (and any other top-level value) may come back to back, with or without whitespace, split
 * across chunks anywhere (even inside a UTF-8 sequence). Braces and brackets inside strings
 * (and escaped quotes) do not count. A text larger than `maxBytes`, or nested deeper than
 * {@link QMP_MAX_NESTING}, is not buffered: the rest of it is skipped by structure and one
 * error is yielded in its place, so memory stays bounded (by `maxBytes` plus one chunk) whatever
 * a client sends.
 */
export class JsonSplitter {
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });
  private parts: Uint8Array[] = [];
  private size = 0;
  private depth = 0;
  private inString = false;
  private escaped = false;
  /** A top-level scalar (number, keyword, garbage) is being read. */
  private scalar = false;
  /** Why the current text is being skipped instead of buffered (null: buffering). */
  private dropped: QmpError | null = null;

  constructor(
    /** Largest JSON text kept, in bytes; larger ones are dropped with an error. */
    readonly maxBytes: number = QMP_MAX_MESSAGE_BYTES,
  ) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 2) throw new RangeError(`maxBytes must be an integer of at least 2, got ${maxBytes}`);
  }

  /** Bytes held for the text in progress. */
  get buffered(): number {
    return this.size;
  }

  /** True while a text has started and not ended. */
  get pending(): boolean {
    return this.depth > 0 || this.inString || this.scalar;
  }

  /** Feeds bytes; returns the texts (and errors) completed by them, in order. */
  push(chunk: Uint8Array): SplitItem[] {
    const out: SplitItem[] = [];
    let start = this.pending ? 0 : -1;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (b === BACKSLASH) this.escaped = true;
        else if (b === QUOTE) {
          this.inString = false;
          if (this.depth === 0) {
            this.finish(chunk, start, i + 1, out);
            start = -1;
          }
        }
        continue;
      }
      if (this.scalar) {
        if (!isSpace(b) && b !== LBRACE && b !== LBRACKET && b !== RBRACE && b !== RBRACKET && b !== QUOTE) continue;
        // The scalar ended just before this byte, which is then read afresh.
        this.scalar = false;
        this.finish(chunk, start, i, out);
        start = -1;
      }
      if (this.depth === 0) {
        if (isSpace(b)) continue;
        start = i;
        if (b === LBRACE || b === LBRACKET) this.depth = 1;
        else if (b === QUOTE) this.inString = true;
        else if (b === RBRACE || b === RBRACKET) {
          // A stray closer is a text of its own: the parser reports it.
          this.finish(chunk, i, i + 1, out);
          start = -1;
        } else this.scalar = true;
        continue;
      }
      if (b === QUOTE) this.inString = true;
      else if (b === LBRACE || b === LBRACKET) {
        if (++this.depth > QMP_MAX_NESTING && this.dropped === null) {
          this.drop(new QmpError('GenericError', `JSON parse error, nesting deeper than ${QMP_MAX_NESTING} levels`));
        }
      } else if (b === RBRACE || b === RBRACKET) {
        if (--this.depth === 0) {
          this.finish(chunk, start, i + 1, out);
          start = -1;
        }
      }
    }
    if (start >= 0 && this.dropped === null) this.keep(chunk.subarray(start));
    if (this.dropped === null && this.size > this.maxBytes) this.tooLarge();
    return out;
  }

  private tooLarge(): void {
    this.drop(new QmpError('GenericError', `JSON parse error, input larger than ${this.maxBytes} bytes`));
  }

  private drop(error: QmpError): void {
    this.dropped = error;
    this.parts = [];
    this.size = 0;
  }

  private keep(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    // Copied: the caller may reuse its buffer.
    this.parts.push(Uint8Array.prototype.slice.call(bytes));
    this.size += bytes.length;
  }

  /** Ends the current text at chunk[end) and yields it (or the reason it was dropped). */
  private finish(chunk: Uint8Array, start: number, end: number, out: SplitItem[]): void {
    if (this.dropped !== null) {
      out.push({ error: this.dropped });
      this.dropped = null;
      this.depth = 0;
      return;
    }
    const tail = chunk.subarray(Math.max(0, start), end);
    if (this.size + tail.length > this.maxBytes) {
      this.parts = [];
      this.size = 0;
      this.tooLarge();
      out.push({ error: this.dropped! });
      this.dropped = null;
      return;
    }
    let bytes: Uint8Array;
    if (this.parts.length === 0) bytes = tail;
    else {
      bytes = new Uint8Array(this.size + tail.length);
      let at = 0;
      for (const p of this.parts) {
        bytes.set(p, at);
        at += p.length;
      }
      bytes.set(tail, at);
    }
    this.parts = [];
    this.size = 0;
    try {
      out.push({ text: this.decoder.decode(bytes) });
    } catch {
      out.push({ error: new QmpError('GenericError', 'JSON parse error, invalid UTF-8 sequence') });
    }
  }
}

/** A checked QMP request. */
export interface QmpRequest {
  /** The command's name. */
  execute: string;
  /** Its arguments (an empty object when absent). */
  arguments: Record<string, unknown>;
  /** The request's `id`, boxed (any JSON value may be an id, `null` included). */
  id?: {
    /** The `id` member as sent. */
    value: unknown;
  };
}

/** The result of reading one JSON text as a request: the request, or the error to answer (with the id, if one was readable). */
export type ParsedRequest =
  | {
      /** The checked request. */
      request: QmpRequest;
    }
  | {
      /** The error to answer with. */
      error: QmpError;
      /** The request's `id`, if it could be read. */
      id?: {
        /** The `id` member as sent. */
        value: unknown;
      };
    };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** JSON.parse's complaint, in the lower-case style of QEMU's parser messages. */
function parseDetail(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.length > 0 ? m[0].toLowerCase() + m.slice(1) : 'invalid input';
}

/** What {@link scan} found in a text. */
const DUPLICATE_KEY = 1;
const BIG_INTEGER = 2;

/** The end of the string that starts (with its quote) at `i`: the index of its closing quote. */
function stringEnd(text: string, i: number): number {
  let escaped = false;
  for (let j = i + 1; j < text.length; j++) {
    const d = text.charCodeAt(j);
    if (escaped) escaped = false;
    else if (d === 0x5c) escaped = true;
    else if (d === 0x22) return j;
  }
  return text.length;
}

/** The end of the number token that starts at `i`, negated when the token is an integer (no fraction, no exponent). */
function numberEnd(text: string, i: number): number {
  let integer = true;
  let j = i + 1;
  for (; j < text.length; j++) {
    const d = text.charCodeAt(j);
    if (d >= 0x30 && d <= 0x39) continue;
    if (d !== 0x2e && d !== 0x65 && d !== 0x45 && d !== 0x2b && d !== 0x2d) break;
    integer = false;
  }
  return integer ? -j : j;
}

/** Whether text[start, end) is an integer JSON.parse would round (past 2^53); a cheap length test first. */
function isBigInteger(text: string, start: number, end: number): boolean {
  return end - start > 15 && !Number.isSafeInteger(Number(text.slice(start, end)));
}

/**
 * Looks through a valid JSON text once for what JSON.parse hides: a member name that appears
 * twice in one object (names compared decoded, so `"a"` and `"\u0061"` are the same; JSON.parse
 * keeps the last one silently, QEMU's parser refuses the text, "duplicate key"), and an integer
 * past 2^53 (JSON.parse rounds it; QEMU reads every int64 exactly). Returns DUPLICATE_KEY (at the
 * first duplicate) or the BIG_INTEGER flag, 0 for neither.
 */
function scan(text: string): number {
  // One entry per open container: the names seen (objects), or null (arrays).
  const open: (Set<string> | null)[] = [];
  let expectKey = false;
  let found = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      const j = stringEnd(text, i);
      if (expectKey) {
        const raw = text.slice(i, j + 1);
        const name = raw.includes('\\') ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        const names = open[open.length - 1]!;
        if (names.has(name)) return DUPLICATE_KEY;
        names.add(name);
        expectKey = false;
      }
      i = j;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      const end = numberEnd(text, i);
      if (end < 0 && isBigInteger(text, i, -end)) found |= BIG_INTEGER;
      i = Math.abs(end) - 1;
    } else if (c === 0x7b) {
      open.push(new Set());
      expectKey = true;
    } else if (c === 0x5b) open.push(null);
    else if (c === 0x7d || c === 0x5d) open.pop();
    else if (c === 0x2c) expectKey = open[open.length - 1] != null;
  }
  return found;
}

/** JSON.parse of a valid text, with every integer past 2^53 as an exact bigint (the rest as JSON.parse gives it). */
function parseWithBigIntegers(text: string): unknown {
  const mark = bigIntegerMark();
  let out = '';
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) i = stringEnd(text, i);
    else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      const end = numberEnd(text, i);
      if (end < 0 && isBigInteger(text, i, -end)) {
        out += `${text.slice(from, i)}"${mark}${text.slice(i, -end)}"`;
        from = -end;
      }
      i = Math.abs(end) - 1;
    }
  }
  out += text.slice(from);
  return JSON.parse(out, (_key, v: unknown) => (typeof v === 'string' && v.startsWith(mark) ? BigInt(v.slice(mark.length)) : v));
}

/**
 * Parses one JSON text and checks it as QEMU's dispatcher does (integers past 2^53 as bigints): an object, whose members are
 * `execute` (a string, required), `arguments` (an object) and `id` (anything); any other
 * member is refused. `exec-oob` is refused like any unknown member (no `oob` capability).
 */
export function parseRequest(text: string): ParsedRequest {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { error: new QmpError('GenericError', `JSON parse error, ${parseDetail(e)}`) };
  }
  const found = scan(text);
  // A repeated member would otherwise run the last one: {"execute":"query-block","execute":"quit"} quit.
  if (found === DUPLICATE_KEY) return { error: new QmpError('GenericError', 'JSON parse error, duplicate key') };
  // Integers past 2^53 arrive exact, as bigints: the commands take what fits QAPI's int64 (qapi-args.ts).
  if (found === BIG_INTEGER) value = parseWithBigIntegers(text);
  if (!isObject(value)) return { error: new QmpError('GenericError', 'QMP input must be a JSON object') };
  const id = Object.hasOwn(value, 'id') ? { value: value.id } : undefined;
  const fail = (desc: string): ParsedRequest => ({ error: new QmpError('GenericError', desc), id });
  for (const [key, member] of Object.entries(value)) {
    if (key === 'execute') {
      if (typeof member !== 'string') return fail("QMP input member 'execute' must be a string");
    } else if (key === 'arguments') {
      if (!isObject(member)) return fail("QMP input member 'arguments' must be an object");
    } else if (key !== 'id') return fail(`QMP input member '${key}' is unexpected`);
  }
  if (!Object.hasOwn(value, 'execute')) return fail("QMP input lacks member 'execute'");
  const request: QmpRequest = { execute: value.execute as string, arguments: (value.arguments as Record<string, unknown> | undefined) ?? {} };
  if (id !== undefined) request.id = id;
  return { request };
}
