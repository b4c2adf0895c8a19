// A live mirror under load: a qcow2 exported over NBD (our NbdServer, QMP block-export-add) while
// fio writes with verify=crc32c; blockdev-mirror, READY, job-complete mid-run: fio's own read-back
// (now served by the target) passes, a second fio pass verifies every block again, a write after
// the pivot lands in the target only, and qemu-img checks and reads both images afterwards.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { NbdExportManager } from '../../src/qmp/exports.js';
import { startOurQmp } from '../helpers/qmp-client.js';
import { qsdSuite } from '../helpers/qsd-suite.js';
import { haveProgram, run } from '../helpers/tools.js';

const HAVE = haveProgram('fio') && haveProgram('qemu-img') && haveProgram('qemu-io');
const SIZE = 64 << 20;

const suite = qsdSuite('mirror-fio-', { nbd: true });

/** fio over the export; resolves with its exit code and stderr. */
function fio(uri: string, extra: string[]): Promise<{ code: number | null; err: string }> {
  const child = spawn(
    'fio',
    ['--name=mirror', '--ioengine=nbd', `--uri=${uri}`, '--bs=4k', '--size=16M', '--iodepth=4', '--verify=crc32c', '--randseed=7', '--rw=randwrite', ...extra],
    // fio leaves its verify state file in its working directory: the test's.
    { stdio: ['ignore', 'ignore', 'pipe'], cwd: suite.dir },
  );
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, err })));
}

describe('mirror of an NBD-exported qcow2 under fio', () => {
  it.skipIf(!HAVE)('pivots mid-run: fio verifies through the target, later writes land there only', { timeout: 60_000 }, async () => {
    const src = join(suite.dir, 'src.qcow2');
    const tgt = join(suite.dir, 'tgt.qcow2');
    expect((await run('qemu-img', ['create', '-q', '-f', 'qcow2', src, String(SIZE)])).code).toBe(0);
    expect((await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 32M 4M', src])).code).toBe(0);
    expect((await run('qemu-img', ['create', '-q', '-f', 'qcow2', tgt, String(SIZE)])).code).toBe(0);
    // The export manager finds drives' nodes: the source is a drive's root (a guest's disk).
    await suite.layer.openDrive({ id: 'disk0', driver: 'qcow2', nodeName: 'src', file: { driver: 'file', filename: src } });
    await suite.layer.addNode({ driver: 'qcow2', nodeName: 'tgt', file: { driver: 'file', filename: tgt } });
    const sock = join(suite.dir, 'nbd.sock');
    await suite.nbd.listen({ path: sock });
    const ours = await startOurQmp(suite.layer, suite.dir, { exports: new NbdExportManager(suite.layer, suite.nbd) });
    suite.daemons.push(ours);
    const q = ours.qmp;
    await q.ok('block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'src', name: 'disk', writable: true });
    const uri = `nbd+unix:///disk?socket=${sock}`;

    // fio writes 16 MiB at a paced rate, then reads it all back checking every block.
    const writing = fio(uri, ['--rate_iops=1500']);
    let fioEnded = false;
    void writing.then(() => (fioEnded = true));
    await new Promise((r) => setTimeout(r, 300));
    await q.ok('blockdev-mirror', { 'job-id': 'm', device: 'src', target: 'tgt', sync: 'full' });
    await q.waitEvent('BLOCK_JOB_READY', (d) => d.device === 'm', 30_000);
    await q.ok('job-complete', { id: 'm' });
    await q.waitJobStatus('m', 'null', 30_000);
    expect(fioEnded).toBe(false); // the pivot happened under fio's load
    // The guest's drive and the export's internal one both moved to the target.
    const block = (await q.ok('query-block')) as { device: string; inserted: { 'node-name': string } }[];
    expect(block.find((b) => b.device === 'disk0')?.inserted['node-name']).toBe('tgt');
    const completed = q.events.find((e) => e.event === 'BLOCK_JOB_COMPLETED');
    expect(completed?.data?.error).toBeUndefined();
    expect(completed?.data?.offset).toBe(completed?.data?.len);
    const first = await writing;
    expect(first.code, first.err).toBe(0);
    // Every block fio wrote, read again through the export (the target now).
    const again = await fio(uri, ['--verify_only']);
    expect(again.code, again.err).toBe(0);
    // A write after the pivot goes to the target, not to the source.
    expect((await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 60M 64k', uri])).code).toBe(0);
    await q.ok('block-export-del', { id: 'e0' });
    await ours.stop();
    suite.daemons.splice(0);
    await suite.nbd.close();
    await suite.layer.close();

    expect((await run('qemu-img', ['check', tgt])).code).toBe(0);
    expect((await run('qemu-img', ['check', src])).code).toBe(0);
    const readTgt = await run('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x77 60M 64k', '-c', 'read -P 0x5a 32M 4M', tgt]);
    expect(readTgt.stdout).not.toContain('Pattern verification failed');
    const readSrc = await run('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0 60M 64k', '-c', 'read -P 0x5a 32M 4M', src]);
    expect(readSrc.stdout).not.toContain('Pattern verification failed');
    // Beyond fio's region and the late write, source and target agree.
    const cmp = await run('qemu-img', ['compare', '--image-opts', `driver=raw,offset=${16 << 20},size=${44 << 20},file.driver=qcow2,file.file.driver=file,file.file.filename=${src}`, '--image-opts', `driver=raw,offset=${16 << 20},size=${44 << 20},file.driver=qcow2,file.file.driver=file,file.file.filename=${tgt}`]);
    expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
  });
});
