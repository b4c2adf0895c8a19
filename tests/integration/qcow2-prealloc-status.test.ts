// qcow2 block status asks the image file about data clusters only when the image has metadata
// preallocation (QEMU's qcow2_detect_metadata_preallocation): the map must stay qemu-img's for
// every preallocation mode, read-only and read-write, and once the file fills up.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlockLayer, imageMap } from '../../src/index.js';
import { haveQemuTools } from '../helpers/qemu-images.js';

const available = haveQemuTools();
if (!available) console.log('qcow2 preallocation block status tests skipped: qemu-img/qemu-io not installed (apt-get install qemu-utils)');

const MiB = 1024 * 1024;
let dir = '';
const qemuMap = (file: string) => JSON.parse(execFileSync('qemu-img', ['map', '-U', '--output=json', file], { encoding: 'utf8' })) as Record<string, unknown>[];
const qemuIo = (file: string, ...cmds: string[]) => execFileSync('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), file], { stdio: 'ignore' });

const withoutOffset = ({ offset: _o, ...rest }: Record<string, unknown>) => rest;

function make(name: string, options: string, size: number, writes: string[]): string {
  const f = path.join(dir, `${name}.qcow2`);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, f, String(size)]);
  if (writes.length > 0) qemuIo(f, ...writes);
  return f;
}

/** The map as a drive opened read-write sees it (the writable path runs the detection under the writer's lock). */
async function writableMap(file: string): Promise<Record<string, unknown>[]> {
  const layer = new BlockLayer();
  const d = await layer.openDrive({ driver: 'qcow2', file: { driver: 'file', filename: file } });
  try {
    const out: Record<string, unknown>[] = [];
    for await (const e of d.blockStatusExtents(0, d.length)) {
      const o: Record<string, unknown> = { start: e.offset, length: e.length, depth: e.depth, present: e.allocated, zero: e.zero, data: e.data };
      if (e.hostOffset !== undefined) o.offset = e.hostOffset;
      out.push(o);
    }
    return out;
  } finally {
    await d.close();
  }
}

beforeAll(() => {
  if (available) dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bl-prealloc-status-'));
});
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const writes = ['write -P 7 1M 64k', 'write -P 9 5M 192k'];
const cases = [
  { name: 'off', o: 'preallocation=off', size: 8 * MiB },
  { name: 'metadata', o: 'preallocation=metadata', size: 8 * MiB },
  { name: 'metadata-c4k', o: 'cluster_size=4k,preallocation=metadata', size: 8 * MiB },
  { name: 'metadata-c512-rb64', o: 'cluster_size=512,refcount_bits=64,preallocation=metadata', size: 6 * MiB },
  // Unwritten subclusters of a preallocated cluster: qemu-img names their host offset, our cluster
  // map does not carry it for unallocated ranges (a known gap, outside block status' flags).
  { name: 'metadata-extl2', o: 'extended_l2=on,preallocation=metadata', size: 8 * MiB, noHostForHoles: true },
  { name: 'falloc', o: 'preallocation=falloc', size: 8 * MiB },
  { name: 'full', o: 'preallocation=full', size: 8 * MiB },
];

describe.skipIf(!available)('qcow2 block status and metadata preallocation, against qemu-img map', () => {
  for (const c of cases) {
    it(`${c.name}: read-only and read-write maps equal qemu-img map --output=json`, async () => {
      const f = make(c.name, c.o, c.size, writes);
      const theirs = qemuMap(f).map((e) => (c.noHostForHoles && e.present === false ? withoutOffset(e) : e));
      expect(await imageMap(f)).toEqual(theirs);
      expect(await writableMap(f)).toEqual(theirs);
    }, 60_000);
  }

  it('metadata: holes in the file read as zero data, written clusters as data (the detection found the preallocation)', async () => {
    const f = make('metadata-check', 'preallocation=metadata', 8 * MiB, writes);
    const map = await imageMap(f);
    expect(map.filter((e) => e.data && !e.zero).map((e) => [e.start, e.length])).toEqual([
      [MiB, 64 * 1024],
      [5 * MiB, 192 * 1024],
    ]);
    expect(map.every((e) => e.data)).toBe(true);
  }, 60_000);

  it('metadata, then every cluster written: the file is allocated, the detection says no, everything is plain data as in qemu-img', async () => {
    const f = make('metadata-filled', 'preallocation=metadata', 4 * MiB, ['write -P 3 0 4M']);
    const theirs = qemuMap(f);
    expect(theirs).toEqual([expect.objectContaining({ start: 0, length: 4 * MiB, data: true, zero: false })]);
    expect(await imageMap(f)).toEqual(theirs);
    expect(await writableMap(f)).toEqual(theirs);
  }, 60_000);

  it('falloc: reserved clusters are data, not zero, though SEEK_DATA may call them holes (no recursion into the file)', async () => {
    const f = make('falloc-check', 'preallocation=falloc', 8 * MiB, []);
    const theirs = qemuMap(f);
    expect(theirs.every((e) => e.data === true && e.zero === false)).toBe(true);
    expect(await imageMap(f)).toEqual(theirs);
  }, 60_000);
});
