import { descriptorText } from './descriptor.js';

/** A random 32-bit content id (QEMU: g_random_int). */
export const newCid = (): number => Math.floor(Math.random() * 2 ** 32) >>> 0;

/**
 * The descriptor bytes with its `CID=` line set to `cid` (QEMU vmdk_write_cid): at least as
 * long as `area`, padded with NULs (where a descriptor's text ends); undefined without a CID line.
 */
export function withCid(area: Uint8Array, cid: number): Uint8Array | undefined {
  const text = descriptorText(area);
  const m = /(^|\n)CID=[0-9a-fA-F]*/.exec(text);
  if (!m) return undefined;
  const updated = `${text.slice(0, m.index)}${m[1]}CID=${cid.toString(16)}${text.slice(m.index + m[0].length)}`;
  const out = new Uint8Array(Math.max(area.length, updated.length));
  for (let i = 0; i < updated.length; i++) out[i] = updated.charCodeAt(i);
  return out;
}
