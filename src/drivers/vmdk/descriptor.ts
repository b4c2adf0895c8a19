import { BlockError } from '../../errors.js';
import * as L from './limits.js';

/** One extent line of a descriptor: `RW 4194304 FLAT "disk-f001.vmdk" 0`. */
export interface ExtentLine {
  access: 'RW' | 'RDONLY';
  /** Size in sectors. */
  sectors: number;
  /** FLAT, VMFS (flat at 0), SPARSE (a hosted sparse extent file), or another type QEMU names. */
  type: string;
  filename: string;
  /** Start of the extent's data in its file, in sectors (flat extents). */
  offset: number;
}

/** What a descriptor says: its create type, CIDs, parent, extents and disk database. */
export interface Descriptor {
  version: number | undefined;
  cid: number | undefined;
  parentCid: number | undefined;
  createType: string | undefined;
  parentFileNameHint: string | undefined;
  extents: ExtentLine[];
  /** The disk database (`ddb.key = "value"`). */
  ddb: Record<string, string>;
}

/** Create types QEMU opens from a descriptor file (a sparse file carries its own descriptor). */
export const DESCRIPTOR_CREATE_TYPES = ['monolithicFlat', 'vmfs', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'vmfsSparse', 'seSparse'];

const EXTENT_LINE = /^\s*(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)\s+"([^"\r\n]*)"(?:\s+(\d+))?\s*$/;
const KEY_VALUE = /^\s*([A-Za-z][\w.]*)\s*=\s*(.*?)\s*$/;

function unquote(v: string): string {
  return v.length >= 2 && v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v;
}

/** The descriptor's bytes as text: up to the first NUL (an embedded descriptor is padded with zeros). */
export function descriptorText(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder('latin1').decode(end >= 0 ? bytes.subarray(0, end) : bytes);
}

function invalid(message: string): BlockError {
  return new BlockError('ECORRUPT', `vmdk: invalid descriptor: ${message}`, { field: 'descriptor' });
}

/** A CID: eight hex digits (QEMU reads it with %x). */
function parseCid(key: string, v: string): number {
  if (!/^[0-9a-fA-F]{1,8}$/.test(v)) throw invalid(`${key}=${v} is not a 32-bit hex number`);
  return Number.parseInt(v, 16);
}

/** Parses a descriptor (pure): every number and name checked against the limits. */
export function parseDescriptor(text: string): Descriptor {
  const d: Descriptor = { version: undefined, cid: undefined, parentCid: undefined, createType: undefined, parentFileNameHint: undefined, extents: [], ddb: {} };
  for (const raw of text.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trimStart().startsWith('#') || line.trim() === '') continue;
    const e = EXTENT_LINE.exec(line);
    if (e) {
      const [, access, sectors, type, filename, offset] = e;
      if (access === 'NOACCESS') continue;
      const n = Number(sectors);
      if (!Number.isSafeInteger(n) || n > L.MAX_CAPACITY_SECTORS) throw invalid(`extent size ${sectors} sectors is too large: ${line}`);
      if (n === 0) continue; // QEMU skips empty extents
      if (filename.length === 0 || filename.length > L.MAX_EXTENT_NAME) throw invalid(`extent file name of ${filename.length} bytes (1 to ${L.MAX_EXTENT_NAME}): ${line}`);
      if (type === 'FLAT' && offset === undefined) throw invalid(`a FLAT extent needs an offset: ${line}`);
      if (type !== 'FLAT' && offset !== undefined && offset !== '0') throw invalid(`only a FLAT extent has an offset: ${line}`);
      const off = Number(offset ?? 0);
      if (!Number.isSafeInteger(off) || off > L.MAX_CAPACITY_SECTORS) throw invalid(`extent offset ${offset} is too large: ${line}`);
      if (d.extents.length >= L.MAX_EXTENTS) throw invalid(`more than ${L.MAX_EXTENTS} extents`);
      d.extents.push({ access: access as 'RW' | 'RDONLY', sectors: n, type, filename, offset: off });
      continue;
    }
    const kv = KEY_VALUE.exec(line);
    if (!kv) continue; // QEMU ignores lines it does not understand
    const [, key, value] = kv;
    const v = unquote(value);
    if (key === 'version') d.version = Number(v);
    else if (key === 'CID') d.cid = parseCid(key, v);
    else if (key === 'parentCID') d.parentCid = parseCid(key, v);
    else if (key === 'createType') d.createType = v;
    else if (key === 'parentFileNameHint') {
      if (v.length === 0 || v.length > L.MAX_PARENT_NAME) throw invalid(`parentFileNameHint of ${v.length} bytes (1 to ${L.MAX_PARENT_NAME})`);
      d.parentFileNameHint = v;
    } else if (key.startsWith('ddb.')) d.ddb[key.slice(4)] = v;
  }
  return d;
}

/**
 * How sure `head` is a text descriptor (QEMU vmdk_probe): comment lines and blank lines, then
 * `version=1`, `2` or `3` on a line of its own: 100; anything else 0.
 */
export function probeDescriptor(head: Uint8Array): number {
  let p = 0;
  const end = head.length;
  while (p < end) {
    const c = head[p];
    if (c === 0x23 /* # */) {
      while (p < end && head[p] !== 0x0a) p++;
      p++;
      continue;
    }
    if (c === 0x20) {
      while (p < end && head[p] === 0x20) p++;
      if (p < end && head[p] === 0x0d) p++;
      if (p >= end || head[p] !== 0x0a) return 0;
      p++;
      continue;
    }
    const rest = String.fromCharCode(...head.subarray(p, Math.min(end, p + 11)));
    return /^version=[123](\n|\r\n)/.test(rest) ? 100 : 0;
  }
  return 0;
}
