// VHDX GUIDs are Microsoft GUIDs: data1 (u32), data2 and data3 (u16) little-endian, then 8 bytes as written.

/** The 16 bytes of a GUID written as text (`2DC27766-F623-4200-9D64-115E9BFD4A08`). */
export function guidBytes(text: string): Uint8Array {
  const hex = text.replace(/-/g, '');
  const b = new Uint8Array(16);
  for (let i = 0; i < 16; i++) b[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  // data1, data2, data3 are stored little-endian
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

/** The text form of the 16 GUID bytes at `offset` of `b`. */
export function guidText(b: Uint8Array, offset = 0): string {
  const g = b.slice(offset, offset + 16);
  g.subarray(0, 4).reverse();
  g.subarray(4, 6).reverse();
  g.subarray(6, 8).reverse();
  const h = Array.from(g, (x) => x.toString(16).padStart(2, '0')).join('').toUpperCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function guidEquals(a: Uint8Array, aOffset: number, b: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[aOffset + i] !== b[i]) return false;
  return true;
}

export function isZeroGuid(g: Uint8Array): boolean {
  return g.every((x) => x === 0);
}

/** A new random (version 4) GUID's bytes. */
export function randomGuid(): Uint8Array {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  b[7] = (b[7] & 0x0f) | 0x40; // version 4 in data3 (little-endian: its high byte is b[7])
  b[8] = (b[8] & 0x3f) | 0x80;
  return b;
}
