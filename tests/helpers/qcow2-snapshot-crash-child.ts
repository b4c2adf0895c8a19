/**
 * Child of the qcow2 snapshot crash test (run with `node --import tsx CHILD`): loads the library,
 * prints `{"loaded":true}`, waits for `IMAGE SEED` as one line on stdin (the parent starts it
 * early: loading takes seconds on a busy machine), opens IMAGE read-write, prints `{"ready":true}`, then loops until it is killed: writes, now and then
 * applies a snapshot, takes a snapshot named `s<i>-<sha1 of the guest view>` (so that whoever
 * finds it can judge its data), and deletes the oldest when there are more than three.
 */
import { createHash } from 'node:crypto';
import { BlockLayer } from '../../src/index.js';

const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const [image, seedText] = await new Promise<string[]>((resolve) => {
  let buf = '';
  process.stdin.on('data', (d: Buffer) => {
    buf += d.toString();
    if (buf.includes('\n')) resolve(buf.slice(0, buf.indexOf('\n')).split(' '));
  });
  process.stdin.on('end', () => process.exit(0));
  say({ loaded: true });
});
let x = Number(seedText) | 1;
const rand = (n: number) => {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return (x >>> 0) % n;
};

const layer = new BlockLayer();
const drive = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: image! } });
const snaps = drive.node.snapshots!;
const view = Buffer.alloc(drive.length);
say({ ready: true });
for (let i = 0; ; i++) {
  for (let k = rand(3) + 1; k > 0; k--) {
    const length = (rand(64) + 1) * 1024;
    const offset = rand(drive.length - length);
    await drive.write(offset, new Uint8Array(length).fill(rand(255) + 1));
  }
  const list = snaps.list();
  if (i % 3 === 2 && list.length > 0) await snaps.apply(list[rand(list.length)]!.id);
  await drive.read(0, view);
  const hash = createHash('sha1').update(view).digest('hex').slice(0, 16);
  await snaps.create({ name: `s${i}-${hash}` });
  if (snaps.list().length > 3) await snaps.delete(snaps.list()[0]!.id, undefined);
  say({ i });
}
