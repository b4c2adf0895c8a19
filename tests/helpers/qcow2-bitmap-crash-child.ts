/**
 * Child of the qcow2 bitmap crash test (run with `node --import tsx FILE IMAGE`): opens IMAGE
 * read-write (its persistent bitmaps are marked in use), then loops forever: write round i
 * (64 KiB of byte i % 251 + 1 at 64 KiB × (i % 512)), flush, print `{"flushed": i + 1}`, until it is
 * killed. It exits when stdin closes (the parent is gone).
 */
import { BlockLayer } from '../../src/index.js';

const image = process.argv[2]!;
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
const drive = await new BlockLayer().openDrive({ driver: 'qcow2', file: { driver: 'file', filename: image } });
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
for (let i = 0; ; i++) {
  await drive.write((i % 512) * 65536, new Uint8Array(65536).fill((i % 251) + 1));
  await drive.flush();
  process.stdout.write(`${JSON.stringify({ flushed: i + 1 })}\n`);
}
