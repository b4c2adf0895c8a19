/**
 * Child of the resize crash test (run with `node --import tsx`, the image path as its argument):
 * opens the qcow2 image read-write, prints `{"ready":true}`, then loops until killed: writes near
 * the end, grows the image past the L1 table's cover (the table moves), writes past the old end,
 * shrinks it back (L2 tables and clusters freed, the file cut), printing `{"cycle":n}` after each.
 */
import { BlockLayer } from '../../src/index.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;
const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const image = process.argv[2]!;
const layer = new BlockLayer();
const drive = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: image } });
// A run killed while grown starts from the small size again.
if (drive.length !== MiB) await drive.resize(MiB, { shrink: true });
say({ ready: true });
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
for (let n = 0; ; n++) {
  await drive.write(drive.length - 8192, new Uint8Array(8192).fill(n & 0xff));
  const grown = (n + 2) * GiB;
  await drive.resize(grown);
  await drive.write(grown - 3 * MiB, new Uint8Array(65536).fill(0xa5));
  await drive.write(GiB + 4096 * n, new Uint8Array(4096).fill(0x5a));
  await drive.resize(MiB, { shrink: true });
  say({ cycle: n });
}
