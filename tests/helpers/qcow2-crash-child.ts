/**
 * Child of the qcow2 crash test (run with `node --import tsx`). Loads the library, prints
 * `{"loaded":true}`, then waits for its CrashChildArgs as one JSON line on stdin (so the parent
 * can start it early: loading takes seconds on a busy machine). Then it opens the image
 * read-write, prints `{"ready":true}` and loops forever: a round of writes issued together,
 * then flush, then `{"flushed": n}` (writes with index < n are durable), until it is killed.
 * It exits when stdin closes (the parent is gone).
 */
import { BlockLayer } from '../../src/index.js';
import { patternBytes } from './pattern-bytes.js';
import { type CrashChildArgs, crashWrite } from './qcow2-crash-plan.js';
import { openKind, qemuNbdPids } from './qcow2-judge.js';

// On Linux, writes to a pipe are synchronous: a printed line reaches the parent before the next round starts.
const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);

const args = await new Promise<CrashChildArgs>((resolve) => {
  let buf = '';
  process.stdin.on('data', (d: Buffer) => {
    buf += d.toString();
    const nl = buf.indexOf('\n');
    if (nl >= 0) resolve(JSON.parse(buf.slice(0, nl)) as CrashChildArgs);
  });
  process.stdin.on('end', () => process.exit(0));
  say({ loaded: true });
});

const layer = new BlockLayer();
// Through openKind: QCOW2_TESTS_VIA=qemu-nbd makes QEMU the writer (to prove the harness).
const drive = await openKind(layer, { format: args.format }, args.image);
say({ ready: true, server: qemuNbdPids.get(drive) });
for (let i = args.start; ; i += args.perRound) {
  const round = [];
  for (let k = 0; k < args.perRound; k++) {
    const w = crashWrite(args, i + k);
    round.push(drive.write(w.offset, patternBytes(w.dataSeed, w.length)));
  }
  await Promise.all(round);
  await drive.flush();
  say({ flushed: i + args.perRound });
}
