/**
 * libvirt `<iotune>` spellings (also used by OpenStack QoS specs): `total_bytes_sec`,
 * `read_iops_sec_max`, `write_bytes_sec_max_length`, `size_iops_sec`, `group_name`, …
 */
import { BlockError } from '../errors.js';
import type { ThrottleLimits, ThrottleOptions } from '../throttle/limits.js';
import { expectLimits, expectRecord, expectString } from './input.js';
import { BY_LIBVIRT, toLibvirtName, validateSpelled } from './throttle-names.js';

/** libvirt iotune names (values as numbers or numeric strings) to limits and group. */
export function fromLibvirtIotune(iotune: Record<string, number | string>): ThrottleOptions {
  const limits: ThrottleLimits = {};
  const spelling = new Map<string, string>();
  let group: string | undefined;
  for (const [key, raw] of Object.entries(expectRecord(iotune, 'iotune'))) {
    if (key === 'group_name') {
      if (typeof raw !== 'string' && typeof raw !== 'number') throw new BlockError('EINVAL', 'group_name: must be a string', { field: key });
      group = String(raw);
      if (group === '') throw new BlockError('EINVAL', 'group_name: must not be empty', { field: key });
      continue;
    }
    const field = BY_LIBVIRT.get(key);
    if (!field) throw new BlockError('EINVAL', `unknown iotune element '${key}'`, { field: key });
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < 0) throw new BlockError('EINVAL', `${key}: expects a non-negative integer`, { field: key });
    if (n !== 0) limits[field] = n;
    spelling.set(field, key);
  }
  validateSpelled(limits, spelling, toLibvirtName);
  return group === undefined ? limits : { ...limits, group };
}

/** Limits and group as libvirt iotune names (only the fields that are set). */
export function toLibvirtIotune(throttle: ThrottleOptions): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  expectLimits(throttle, 'throttle', true);
  for (const [k, v] of Object.entries(throttle)) {
    if (v === undefined) continue;
    out[k === 'group' ? 'group_name' : toLibvirtName(k)] = v;
  }
  return out;
}

/** One XML token of the small subset an `<iotune>` fragment uses. */
type XmlToken =
  | { kind: 'open'; name: string; attrs: string; selfClosing: boolean; at: number }
  | { kind: 'close'; name: string; at: number }
  | { kind: 'text'; text: string; at: number };

const NAME = /^[A-Za-z_][\w.:-]*/;

function xmlError(message: string, at?: number): BlockError {
  return new BlockError('EINVAL', at === undefined ? message : `${message} (at offset ${at})`);
}

/** Decodes the five predefined entities and character references. */
function decodeEntities(text: string, at: number): string {
  return text.replace(/&([^;&\s]*);?/g, (whole, ref: string) => {
    const named: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
    if (!whole.endsWith(';')) throw xmlError(`unterminated entity '${whole}'`, at);
    if (Object.hasOwn(named, ref)) return named[ref];
    const m = /^#(x[0-9a-f]+|[0-9]+)$/i.exec(ref);
    if (!m) throw xmlError(`unknown entity '&${ref};'`, at);
    const code = m[1][0].toLowerCase() === 'x' ? Number.parseInt(m[1].slice(1), 16) : Number(m[1]);
    if (code > 0x10ffff) throw xmlError(`bad character reference '&${ref};'`, at);
    return String.fromCodePoint(code);
  });
}

/**
 * Splits XML into tags and text. Comments, processing instructions (`<?xml …?>`) and
 * `<!DOCTYPE …>` are skipped; CDATA sections become text; entities are decoded in text.
 */
function tokenizeXml(xml: string): XmlToken[] {
  const tokens: XmlToken[] = [];
  let i = 0;
  const until = (end: string, what: string) => {
    const j = xml.indexOf(end, i);
    if (j < 0) throw xmlError(`unterminated ${what}`, i);
    return j;
  };
  while (i < xml.length) {
    if (xml[i] !== '<') {
      const j = xml.indexOf('<', i);
      const end = j < 0 ? xml.length : j;
      tokens.push({ kind: 'text', text: decodeEntities(xml.slice(i, end), i), at: i });
      i = end;
    } else if (xml.startsWith('<!--', i)) {
      i = until('-->', 'comment') + 3;
    } else if (xml.startsWith('<![CDATA[', i)) {
      const j = until(']]>', 'CDATA section');
      tokens.push({ kind: 'text', text: xml.slice(i + 9, j), at: i });
      i = j + 3;
    } else if (xml.startsWith('<?', i)) {
      i = until('?>', 'processing instruction') + 2;
    } else if (xml.startsWith('<!', i)) {
      i = until('>', 'declaration') + 1;
    } else {
      const at = i;
      const j = until('>', 'tag');
      let body = xml.slice(i + 1, j);
      i = j + 1;
      const close = body.startsWith('/');
      if (close) body = body.slice(1);
      const name = NAME.exec(body)?.[0];
      if (!name) throw xmlError(`malformed tag '<${close ? '/' : ''}${body}>'`, at);
      let rest = body.slice(name.length);
      if (close) {
        if (rest.trim() !== '') throw xmlError(`malformed end tag '</${body}>'`, at);
        tokens.push({ kind: 'close', name, at });
        continue;
      }
      const selfClosing = rest.endsWith('/');
      if (selfClosing) rest = rest.slice(0, -1);
      if (rest !== '' && !/^\s/.test(rest)) throw xmlError(`malformed tag '<${body}>'`, at);
      tokens.push({ kind: 'open', name, attrs: rest.trim(), selfClosing, at });
    }
  }
  return tokens;
}

/**
 * Parses an `<iotune>…</iotune>` fragment (alone or inside a `<disk>` or a whole domain XML)
 * with a small hand tokenizer, no dependency. Inside `<iotune>`: child elements with text
 * only (integers, `group_name` a string), no attributes, each at most once; comments and
 * CDATA allowed. Unknown elements are refused by name, and so are several `<iotune>`
 * elements (which disk's would be meant?). `<iotune/>` means no limits.
 */
export function parseIotuneXml(xml: string): ThrottleOptions {
  const tokens = tokenizeXml(expectString(xml, 'xml'));
  // Well-formedness of the whole input: every open tag closed by the same name.
  const stack: string[] = [];
  for (const t of tokens) {
    if (t.kind === 'open' && !t.selfClosing) stack.push(t.name);
    else if (t.kind === 'close') {
      const open = stack.pop();
      if (open !== t.name) throw xmlError(open === undefined ? `unexpected </${t.name}>` : `</${t.name}> does not close <${open}>`, t.at);
    }
  }
  if (stack.length > 0) throw xmlError(`<${stack[stack.length - 1]}> is not closed`);

  const starts = tokens.flatMap((t, k) => (t.kind === 'open' && t.name === 'iotune' ? [k] : []));
  if (starts.length === 0) throw xmlError('no <iotune> element found');
  if (starts.length > 1) throw xmlError(`${starts.length} <iotune> elements found, expected one`, tokens[starts[1]].at);
  const start = tokens[starts[0]] as Extract<XmlToken, { kind: 'open' }>;
  if (start.attrs !== '') throw xmlError(`<iotune> takes no attributes, found '${start.attrs}'`, start.at);
  if (start.selfClosing) return {};

  const values: Record<string, string> = {};
  let k = starts[0] + 1;
  for (;;) {
    const t = tokens[k++];
    if (t.kind === 'close') break; // </iotune>: nesting was checked above
    if (t.kind === 'text') {
      if (t.text.trim() !== '') throw xmlError(`unexpected text '${t.text.trim().slice(0, 20)}' in <iotune>`, t.at);
      continue;
    }
    const name = t.name;
    if (name !== 'group_name' && !BY_LIBVIRT.has(name)) throw new BlockError('EINVAL', `unknown iotune element '${name}'`, { field: name });
    if (t.attrs !== '') throw new BlockError('EINVAL', `<${name}> takes no attributes, found '${t.attrs}'`, { field: name });
    if (Object.hasOwn(values, name)) throw new BlockError('EINVAL', `iotune element '${name}' given twice`, { field: name });
    let text = '';
    if (!t.selfClosing) {
      for (let c = tokens[k++]; c.kind !== 'close'; c = tokens[k++]) {
        if (c.kind === 'open') throw new BlockError('EINVAL', `<${name}> must contain text only, found <${c.name}>`, { field: name });
        text += c.text;
      }
    }
    values[name] = text.trim();
    if (values[name] === '') throw new BlockError('EINVAL', `<${name}> is empty`, { field: name });
  }
  return fromLibvirtIotune(values);
}

/** Limits and group as an `<iotune>` element. */
export function toIotuneXml(throttle: ThrottleOptions): string {
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const lines = Object.entries(toLibvirtIotune(throttle)).map(([k, v]) => `  <${k}>${esc(String(v))}</${k}>`);
  return `<iotune>\n${lines.join('\n')}\n</iotune>`;
}
