// `blocklayer serve` with qemu-storage-daemon's command line (--blockdev, --object, --nbd-server,
// --export, --chardev/--monitor): the same command line given to both daemons gives the same
// exports (nbdinfo --list) and the same named nodes (query-named-block-nodes over the monitor).
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QmpClient } from '../helpers/qmp-client.js';
import { startQemuDaemon, stopPid } from '../helpers/qemu-daemons.js';
import { type Served, serve } from '../helpers/serve-process.js';
import { haveProgram, ok, run } from '../helpers/tools.js';
import { CLI } from '../helpers/cli.js';

let dir: string;
const stops: (() => Promise<void>)[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'serve-qsd-'));
});

afterEach(async () => {
  for (const s of stops.splice(0)) await s();
  rmSync(dir, { recursive: true, force: true });
});

const have = haveProgram('qemu-storage-daemon') && haveProgram('nbdinfo') && haveProgram('qemu-img');

/** The command line of one daemon whose files are in `at`. */
function commandLine(at: string): string[] {
  return [
    '--object', 'throttle-group,id=tg0,x-iops-total=1000',
    '--blockdev', `driver=file,node-name=f0,filename=${join(at, 'a.qcow2')}`,
    '--blockdev', 'driver=qcow2,node-name=q0,file=f0',
    '--blockdev', JSON.stringify({ driver: 'null-co', 'node-name': 'n0', size: 2097152 }),
    '--blockdev', 'driver=throttle,node-name=t0,throttle-group=tg0,file=n0',
    '--blockdev', `driver=raw,node-name=r0,read-only=on,file.driver=file,file.node-name=r0f,file.filename=${join(at, 'b,,raw.img')}`,
    '--nbd-server', `addr.type=unix,addr.path=${join(at, 'nbd.sock')}`,
    '--export', 'type=nbd,id=e0,node-name=q0,name=disk,writable=on,description=the disk',
    '--export', 'type=nbd,id=e1,node-name=t0,name=zero',
    '--export', 'type=nbd,id=e2,node-name=r0',
    '--chardev', `socket,id=m,path=${join(at, 'qmp.sock')},server=on,wait=off`,
    '--monitor', 'chardev=m',
  ];
}

/** What nbdinfo --list says of each export, and the named nodes the monitor lists. */
async function observe(at: string) {
  const list = JSON.parse(await ok('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${join(at, 'nbd.sock')}`])) as { exports: Record<string, unknown>[] };
  const exports = list.exports.map((e) => ({ name: e['export-name'], description: e.description, size: e['export-size'], ro: e.is_read_only })).sort((a, b) => String(a.name).localeCompare(String(b.name)));
  const qmp = await QmpClient.connect(join(at, 'qmp.sock'));
  try {
    const nodes = ((await qmp.ok('query-named-block-nodes')) as { 'node-name': string; ro: boolean }[]).filter((n) => !n['node-name'].startsWith('#')).map((n) => [n['node-name'], n.ro]);
    const ex = await qmp.ok('query-block-exports');
    return { exports, nodes: nodes.sort(), ex };
  } finally {
    qmp.close();
  }
}

describe('blocklayer serve with qemu-storage-daemon options', () => {
  it.skipIf(!have)('serves the same exports and lists the same nodes as qemu-storage-daemon for the same command line', { timeout: 120_000 }, async () => {
    const seen = [];
    for (const who of ['qsd', 'ours']) {
      const at = join(dir, who);
      mkdirSync(at);
      await ok('qemu-img', ['create', '-q', '-f', 'qcow2', join(at, 'a.qcow2'), '3M']);
      await ok('qemu-img', ['create', '-q', '-f', 'raw', join(at, 'b,raw.img'), '1M']);
      if (who === 'qsd') {
        const pid = startQemuDaemon('qemu-storage-daemon', commandLine(at), dir);
        stops.push(() => stopPid(pid));
      } else {
        const s: Served = await serve(...commandLine(at));
        stops.push(async () => {
          s.child.kill('SIGTERM');
          await s.exited;
        });
      }
      seen.push(await observe(at));
    }
    const [theirs, mine] = seen;
    expect(mine!.exports).toEqual(theirs!.exports);
    expect(mine!.nodes).toEqual(theirs!.nodes);
    expect(mine!.ex).toEqual(theirs!.ex);
    expect(theirs!.exports.map((e) => e.name)).toEqual(['disk', 'r0', 'zero']);
  });

  it.skipIf(!have)('refuses a --blockdev with an unknown member, naming it as QEMU does', { timeout: 60_000 }, async () => {
    const r = await run(process.execPath, [...CLI, 'serve', '--blockdev', 'driver=null-co,node-name=n0,bogus=1', '--nbd-server', `addr.type=unix,addr.path=${join(dir, 's')}`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("Parameter 'bogus' is unexpected");
    const q = await run('qemu-storage-daemon', ['--blockdev', 'driver=null-co,node-name=n0,bogus=1']);
    expect(q.stderr).toContain("Parameter 'bogus' is unexpected");
  });
});
