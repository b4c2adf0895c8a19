/**
 * libvirt `<iotune>` spellings (also used by OpenStack QoS specs): `total_bytes_sec`,
 * `read_iops_sec_max`, `write_bytes_sec_max_length`, `size_iops_sec`, `group_name`, …
 */
import { BlockError } from '../errors.js';
import type { ThrottleLimits, ThrottleOptions } from '../throttle/limits.js';
import { BY_LIBVIRT, toLibvirtName, validateSpelled } from './throttle-names.js';

/** libvirt iotune names (values as numbers or numeric strings) to limits and group. */
export function fromLibvirtIotune(iotune: Record<string, number | string>): ThrottleOptions {
  const limits: ThrottleLimits = {};
  const spelling = new Map<string, string>();
  let group: string | undefined;
  for (const [key, raw] of Object.entries(iotune)) {
    if (key === 'group_name') {
      group = String(raw);
      continue;
    }
    const field = BY_LIBVIRT.get(key);
    if (!field) throw new BlockError('EINVAL', `unknown iotune element '${key}'`, { field: key });
    const n = typeof raw === 'number' ? raw : /^\d+$/.test(raw.trim()) ? Number(raw.trim()) : Number.NaN;
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
  for (const [k, v] of Object.entries(throttle)) {
    if (v === undefined) continue;
    out[k === 'group' ? 'group_name' : toLibvirtName(k)] = v;
  }
  return out;
}

/**
 * Parses an `<iotune>…</iotune>` fragment of a libvirt domain XML: child elements with text
 * only, comments allowed. A tiny tokenizer is enough for this flat shape (no dependency).
 */
export function parseIotuneXml(xml: string): ThrottleOptions {
  const body = /<iotune\s*>([\s\S]*?)<\/iotune\s*>/.exec(xml.replace(/<!--[\s\S]*?-->/g, ''));
  if (!body) throw new BlockError('EINVAL', 'no <iotune> element found');
  const values: Record<string, string> = {};
  const element = /<([a-z_]+)\s*>([^<]*)<\/\1\s*>|(\S)/g;
  for (let m = element.exec(body[1]); m !== null; m = element.exec(body[1])) {
    if (m[3] !== undefined) throw new BlockError('EINVAL', `unexpected content in <iotune> near '${body[1].slice(m.index, m.index + 20)}'`);
    const text = m[2].trim();
    values[m[1]] = text.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
  }
  return fromLibvirtIotune(values);
}

/** Limits and group as an `<iotune>` element. */
export function toIotuneXml(throttle: ThrottleOptions): string {
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const lines = Object.entries(toLibvirtIotune(throttle)).map(([k, v]) => `  <${k}>${esc(String(v))}</${k}>`);
  return `<iotune>\n${lines.join('\n')}\n</iotune>`;
}
