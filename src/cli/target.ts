export { targetOptions } from '../image.js';

/** Bytes with binary units, as qemu-img prints them ("2 MiB (2097152 bytes)"). */
export function humanSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  const num = u === 0 ? String(v) : Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 3 : v < 100 ? 2 : 1).replace(/\.?0+$/, '');
  return `${num} ${units[u]}`;
}
